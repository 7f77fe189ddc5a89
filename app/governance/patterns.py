"""Path and name patterns shared by the analysers: credential stores, persistence targets, user data."""

from __future__ import annotations

import re

# Files that hold credentials. `.env.example` and friends are templates, not secrets.
SECRET_PATH = re.compile(
    r"(?:^|[\s'\"=:(/\\~$`{])(?:"
    r"\.ssh(?:[/\\]|\b)|id_(?:rsa|dsa|ecdsa|ed25519)\b|\.aws[/\\](?:credentials|config)\b|\.azure[/\\]"
    r"|\.config[/\\]gcloud|application_default_credentials\.json|\.kube[/\\]config|\.docker[/\\]config\.json"
    r"|\.netrc\b|\.pgpass\b|\.git-credentials\b|\.npmrc\b|\.pypirc\b"
    r"|\.env(?:\.(?!example|sample|template|dist|defaults?\b)\w+)?(?![\w.-])"
    r"|\.bash_history|\.zsh_history|/etc/shadow\b|\.gnupg\b|\.password-store|\.kdbx\b"
    r"|login data\b|logins\.json|key[34]\.db|cookies\.sqlite|places\.sqlite|wallet\.dat|\.electrum\b"
    r"|\.ethereum[/\\]keystore|local extension settings|exodus[/\\]|keychains?[/\\]|\.keychain\b"
    r"|(?:chrome|chromium|brave|edge|firefox|mozilla|opera|vivaldi)[^'\"\s]{0,60}[/\\](?:cookies|web da"
    r"ta|history)\b"
    r")",
    re.I,
)
# Environment variable names that hold secrets.
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|PWD|CREDENTIAL|AUTH|PRIVATE|SESSION)", re.I)

RC_FILE = re.compile(
    r"(?:^|[/\\~])\.(?:bashrc|zshrc|bash_profile|profile|zprofile|zshenv|zlogin|bash_login|cshrc|tcshrc)\b"
    r"|/etc/(?:profile|bash\.bashrc|zshrc|environment)\b|/etc/profile\.d/|config\.fish\b"
    r"|microsoft\.powershell_profile\.ps1",
    re.I,
)
AUTHORIZED_KEYS = re.compile(r"authorized_keys2?\b", re.I)
CRON_PATH = re.compile(r"/etc/cron|/var/spool/cron|/etc/crontab\b", re.I)
SERVICE_PATH = re.compile(
    r"launchagents|launchdaemons|/etc/systemd/|\.config/systemd/|systemd/user/|\.service\b|/etc/init\.d/"
    r"|/etc/rc\.local|\.config/autostart|start menu[/\\]programs[/\\]startup|currentversion[/\\]run\b",
    re.I,
)
GIT_HOOK = re.compile(r"\.git[/\\]hooks[/\\]|\bcore\.hookspath\b", re.I)
AGENT_MEMORY = re.compile(
    r"(?:^|[/\\\s'\"`])(?:claude\.md|agents\.md|gemini\.md|\.cursorrules|\.windsurfrules|\.clinerules"
    r"|copilot-instructions\.md|\.cursor[/\\]rules|\.claude[/\\](?:settings|commands|agents|memory)"
    r"|memory\.md)\b",
    re.I,
)
SUDOERS = re.compile(r"/etc/sudoers", re.I)

# Extensions of files people keep: documents, mail, calendars, databases, photos, key stores.
USER_DATA_EXT = frozenset({
    "doc", "docx", "xls", "xlsx", "ppt", "pptx", "pdf", "odt", "ods", "odp", "rtf", "db", "sqlite",
    "sqlite3", "ics", "ical", "icalendar", "vcf", "eml", "mbox", "pst", "jpg", "jpeg", "heic", "png",
    "key", "pages", "numbers", "kdbx", "wallet", "csv", "mov", "mp4",
})  # fmt: skip
# Paths whose recursive removal takes the user's data or the system with it.
BROAD_TARGETS = frozenset({
    "/", "/*", "~", "~/", "~/*", "$home", "${home}", "$home/", "$home/*", "${home}/", "${home}/*", "*", "./*",
    "../*", "..", ".", "../", "./", "/home", "/users", "/etc", "/usr", "/var", "/bin", "/boot", "/root",
    "/opt", "/lib", "c:\\", "c:/", "%userprofile%", "$env:userprofile", "/home/*", "/users/*", ".*", "../..",
})  # fmt: skip
ROOT_TARGETS = frozenset(
    {"/", "/*", "~", "~/", "~/*", "$home", "${home}", "$home/", "$home/*", "c:\\", "c:/"}
)


def extension_of(pattern: str) -> str:
    """The extension a glob or file name ends in, lower case, or ''."""
    name = pattern.strip("'\"").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def is_secret_path(text: str) -> bool:
    """Whether `text` names a credential store."""
    return bool(SECRET_PATH.search(text))


# Package names people mistype, and which attackers register: a list of popular ones per ecosystem.
POPULAR_PYPI = frozenset({
    "requests", "numpy", "pandas", "urllib3", "setuptools", "python-dateutil", "pyyaml", "certifi", "idna",
    "charset-normalizer", "boto3", "botocore", "cryptography", "packaging", "jinja2", "markupsafe", "click",
    "flask", "django", "fastapi", "pydantic", "sqlalchemy", "pillow", "matplotlib", "scipy", "scikit-learn",
    "tensorflow", "torch", "beautifulsoup4", "lxml", "selenium", "pytest", "colorama", "tqdm", "openai",
    "anthropic", "httpx", "aiohttp", "psutil", "paramiko", "pycryptodome", "pyjwt", "redis", "pymongo",
    "psycopg2", "psycopg2-binary", "websocket-client", "python-dotenv", "rich", "typer", "transformers",
    "huggingface-hub", "langchain", "playwright", "openpyxl", "python-docx", "pypdf", "reportlab",
    "discord.py", "slack-sdk", "stripe", "twilio", "google-api-python-client", "pyautogui", "pynput",
    "keyboard", "opencv-python", "seaborn", "plotly", "uvicorn", "gunicorn", "celery", "sentry-sdk",
    "black", "ruff", "mypy", "pylint", "flake8", "docker", "kubernetes", "pyopenssl", "attrs", "tomli",
    "wheel", "virtualenv", "pipenv", "poetry", "datasets", "accelerate", "tiktoken", "nltk", "spacy",
    "xgboost", "lightgbm", "statsmodels", "sympy", "networkx", "imageio", "markdown", "pygments",
})  # fmt: skip
POPULAR_NPM = frozenset({
    "react", "react-dom", "lodash", "express", "axios", "chalk", "commander", "debug", "moment", "request",
    "typescript", "webpack", "vue", "next", "jquery", "dotenv", "uuid", "minimist", "yargs", "async",
    "bluebird", "underscore", "body-parser", "cors", "mongoose", "socket.io", "ws", "node-fetch", "cross-env",
    "colors", "eslint", "prettier", "jest", "mocha", "inquirer", "glob", "fs-extra", "rimraf", "mkdirp",
    "tailwindcss", "vite", "puppeteer", "playwright", "discord.js", "openai", "electron", "nodemailer",
    "zod", "pnpm", "yarn", "nodemon", "ts-node", "esbuild", "rollup", "babel-core", "core-js", "classnames",
    "styled-components", "redux", "react-router", "react-router-dom", "dayjs", "date-fns", "sharp", "pdfkit",
})  # fmt: skip


def _distance(a: str, b: str) -> int:
    """Damerau-Levenshtein distance (adjacent swaps count once), early exit above 2."""
    if abs(len(a) - len(b)) > 2:
        return 3
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]


def typosquat_of(name: str, ecosystem: str) -> str | None:
    """The popular package `name` imitates (one edit away, or the same once separators go), if any."""
    popular = POPULAR_PYPI if ecosystem == "pypi" else POPULAR_NPM
    # PEP 503: case and runs of -_. do not matter, so python_dateutil *is* python-dateutil.
    lowered = re.sub(r"[-_.]+", "-", name.lower().strip())
    if lowered in POPULAR_PYPI or lowered in POPULAR_NPM or len(lowered) < 5:
        return None
    squashed = lowered.replace("-", "")
    for known in popular:
        if len(known) < 5:
            continue
        if squashed == re.sub(r"[-_.]", "", known) or _distance(lowered, known) == 1:
            return known
    return None
