"""governance: trust tiers, risk levels, scans, reviews, waivers, approvals; the audit log append-only

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 17:02:02.855329

Existing skills and versions become T1 (unvetted) with no scan; the rescan task scans them, since
their `scan_ruleset` is empty. Enum values added here stay on downgrade (PostgreSQL cannot drop them).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


RISK = postgresql.ENUM('none', 'low', 'medium', 'high', 'critical', name='risk_level', create_type=False)
PROVENANCE = postgresql.ENUM('distilled', 'imported', 'authored', name='skill_provenance', create_type=False)
REVIEW = postgresql.ENUM('pending', 'accepted', 'rejected', name='review_state', create_type=False)
NEW_EVENT_KINDS = (
    'imported', 'quarantined', 'accepted', 'review_rejected', 'published', 'withdrawn', 'tier_changed',
)

# Rows of the audit log are never changed or removed; only a tenant's deletion (a cascade) may, and it
# must say so by setting `skillfoundry.audit_purge` for its transaction.
APPEND_ONLY = """
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('skillfoundry.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
"""


def upgrade() -> None:
    for kind in NEW_EVENT_KINDS:
        op.execute(f"ALTER TYPE skill_event_kind ADD VALUE IF NOT EXISTS '{kind}'")
    op.execute("ALTER TYPE skill_status ADD VALUE IF NOT EXISTS 'withdrawn'")
    bind = op.get_bind()
    for enum in (RISK, PROVENANCE, REVIEW):
        enum.create(bind, checkfirst=True)
    op.create_table('finding_waiver',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('rule_id', sa.String(length=64), nullable=False),
    sa.Column('actor', sa.String(length=256), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_finding_waiver_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id', 'sha256', 'rule_id', name=op.f('pk_finding_waiver'))
    )
    op.create_table('skill_approval',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('version_id', sa.Uuid(), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('actor', sa.String(length=256), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('applied_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_skill_approval_tenant_id_tenant'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['skill_version.id'], name=op.f('fk_skill_approval_version_id_skill_version'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_skill_approval'))
    )
    op.create_index('uq_skill_approval_open', 'skill_approval', ['version_id', 'action', 'actor'], unique=True, postgresql_where='applied_at IS NULL')
    op.create_table('skill_scan',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('version_id', sa.Uuid(), nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('ruleset', sa.String(length=32), nullable=False),
    sa.Column('malicious', sa.Boolean(), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('weight', sa.Integer(), nullable=False),
    sa.Column('risk_level', RISK, nullable=False),
    sa.Column('findings', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_skill_scan_tenant_id_tenant'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['skill_version.id'], name=op.f('fk_skill_scan_version_id_skill_version'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_skill_scan'))
    )
    op.create_index('ix_skill_scan_version_id_created_at', 'skill_scan', ['version_id', 'created_at'], unique=False)
    op.add_column('audit_log', sa.Column('seq', sa.BigInteger(), sa.Identity(always=True), nullable=False))
    op.create_index('ix_audit_log_tenant_id_seq', 'audit_log', ['tenant_id', 'seq'], unique=False)
    op.create_index('ix_audit_log_tenant_id_action_seq', 'audit_log', ['tenant_id', 'action', 'seq'], unique=False)
    op.create_index('ix_audit_log_tenant_id_target_id_seq', 'audit_log', ['tenant_id', 'target_id', 'seq'], unique=False)
    op.add_column('skill', sa.Column('provenance', PROVENANCE, nullable=False, server_default='distilled'))
    op.add_column('skill', sa.Column('risk_level', RISK, nullable=False, server_default='none'))
    op.add_column('skill', sa.Column('allowed_tools', sa.Text(), nullable=False, server_default=''))
    op.alter_column('skill', 'trust_tier',
               existing_type=sa.VARCHAR(length=32),
               type_=sa.SmallInteger(),
               existing_nullable=False,
               postgresql_using="CASE WHEN trust_tier IN ('quarantined', 'blocked') THEN 0 ELSE 1 END")
    op.add_column('skill_version', sa.Column('trust_tier', sa.SmallInteger(), nullable=False, server_default='1'))
    op.add_column('skill_version', sa.Column('risk_level', RISK, nullable=False, server_default='none'))
    op.add_column('skill_version', sa.Column('review', REVIEW, nullable=False, server_default='pending'))
    op.add_column('skill_version', sa.Column('reviewed_by', sa.String(length=256), nullable=True))
    op.add_column('skill_version', sa.Column('reviewed_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('skill_version', sa.Column('review_reason', sa.Text(), nullable=True))
    op.add_column('skill_version', sa.Column('scan_ruleset', sa.String(length=32), nullable=False, server_default=''))
    op.add_column('skill_version', sa.Column('scan_malicious', sa.Boolean(), nullable=False, server_default='false'))
    op.add_column('skill_version', sa.Column('scan_score', sa.Float(), nullable=False, server_default='0'))
    op.add_column('skill_version', sa.Column('findings_count', sa.Integer(), nullable=False, server_default='0'))
    op.create_index('ix_skill_version_review_created_at', 'skill_version', ['review', 'created_at'], unique=False)
    op.create_index('ix_skill_version_scan_ruleset', 'skill_version', ['scan_ruleset'], unique=False)
    # The defaults only filled existing rows; the application always sets these columns.
    for table, column in (
        ('skill', 'provenance'), ('skill', 'risk_level'), ('skill', 'allowed_tools'), ('skill_version', 'trust_tier'),
        ('skill_version', 'risk_level'), ('skill_version', 'review'), ('skill_version', 'scan_ruleset'),
        ('skill_version', 'scan_malicious'), ('skill_version', 'scan_score'), ('skill_version', 'findings_count'),
    ):
        op.alter_column(table, column, server_default=None)
    op.execute(APPEND_ONLY)


def downgrade() -> None:
    op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
    op.execute("DROP FUNCTION audit_log_append_only()")
    op.drop_index('ix_skill_version_scan_ruleset', table_name='skill_version')
    op.drop_index('ix_skill_version_review_created_at', table_name='skill_version')
    op.drop_column('skill_version', 'findings_count')
    op.drop_column('skill_version', 'scan_score')
    op.drop_column('skill_version', 'scan_malicious')
    op.drop_column('skill_version', 'scan_ruleset')
    op.drop_column('skill_version', 'review_reason')
    op.drop_column('skill_version', 'reviewed_at')
    op.drop_column('skill_version', 'reviewed_by')
    op.drop_column('skill_version', 'review')
    op.drop_column('skill_version', 'risk_level')
    op.drop_column('skill_version', 'trust_tier')
    op.alter_column('skill', 'trust_tier',
               existing_type=sa.SmallInteger(),
               type_=sa.VARCHAR(length=32),
               existing_nullable=False,
               postgresql_using="CASE WHEN trust_tier = 0 THEN 'quarantined' ELSE 'unreviewed' END")
    op.drop_column('skill', 'allowed_tools')
    op.drop_column('skill', 'risk_level')
    op.drop_column('skill', 'provenance')
    op.drop_index('ix_audit_log_tenant_id_target_id_seq', table_name='audit_log')
    op.drop_index('ix_audit_log_tenant_id_action_seq', table_name='audit_log')
    op.drop_index('ix_audit_log_tenant_id_seq', table_name='audit_log')
    op.drop_column('audit_log', 'seq')
    op.drop_index('ix_skill_scan_version_id_created_at', table_name='skill_scan')
    op.drop_table('skill_scan')
    op.drop_index('uq_skill_approval_open', table_name='skill_approval', postgresql_where='applied_at IS NULL')
    op.drop_table('skill_approval')
    op.drop_table('finding_waiver')
    bind = op.get_bind()
    for enum in (REVIEW, PROVENANCE, RISK):
        enum.drop(bind, checkfirst=True)
