"""Python analysis through the AST: imports, calls, constant folding and simple taint (pure).

The source is parsed with `ast.parse` and never run. Strings are folded where they are built from
constants (concatenation, f-strings, joins, `chr`, slicing, base64 and hex decoding), so a command
assembled from fragments is analysed as the command it becomes. A light taint follows names from
where data comes from (network, decoders, the environment, credential files, function parameters)
to where it goes (exec, a shell, a request body).
"""

from __future__ import annotations

import ast
import base64
import binascii
import codecs
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field

from app.governance import patterns as pat
from app.governance.decode import decode_token, opaque, payloads
from app.governance.findings import Collector, Context, Fact
from app.governance.net import check_url, classify_url
from app.governance.text import URL, fold_code

EXEC_FUNCS = frozenset({"exec", "eval", "compile", "builtins.exec", "builtins.eval", "execfile"})
SHELL_FUNCS = frozenset({
    "os.system", "os.popen", "subprocess.run", "subprocess.call", "subprocess.check_call",
    "subprocess.check_output", "subprocess.Popen", "subprocess.getoutput", "subprocess.getstatusoutput",
    "commands.getoutput", "pty.spawn", "os.execv", "os.execve", "os.execvp", "os.execvpe", "os.execl",
    "os.execlp", "os.execle", "os.spawnv", "os.spawnl", "os.spawnlp", "os.spawnvp", "os.posix_spawn",
    "asyncio.create_subprocess_shell", "asyncio.create_subprocess_exec",
})  # fmt: skip
DECODERS = frozenset({
    "base64.b64decode", "base64.b32decode", "base64.b16decode", "base64.b85decode", "base64.a85decode",
    "base64.urlsafe_b64decode", "base64.decodebytes", "base64.standard_b64decode", "binascii.unhexlify",
    "binascii.a2b_base64", "binascii.a2b_hex", "bytes.fromhex", "codecs.decode", "zlib.decompress",
    "gzip.decompress", "bz2.decompress", "lzma.decompress", "marshal.loads", "pickle.loads",
})  # fmt: skip
_NET_ROOT = re.compile(r"^(requests|httpx|aiohttp|urllib3|urllib\.request|http\.client|pycurl)\b")
SENSITIVE_CALLS = (
    ("pyperclip.paste", "clipboard"), ("clipboard.paste", "clipboard"), ("ImageGrab.grab", "screen"),
    ("PIL.ImageGrab.grab", "screen"), ("pyautogui.screenshot", "screen"), ("mss.mss", "screen"),
    ("pynput.keyboard.Listener", "keystrokes"), ("keyboard.on_press", "keystrokes"),
    ("keyboard.hook", "keystrokes"), ("keyboard.record", "keystrokes"), ("CoreLocation.", "location"),
    ("geocoder.ip", "location"), ("browser_cookie3.", "browser cookies"), ("cv2.VideoCapture", "camera"),
    ("win32clipboard.GetClipboardData", "clipboard"), ("sounddevice.rec", "microphone"),
)  # fmt: skip
_PATH_FUNCS = frozenset({
    "open", "io.open", "codecs.open", "os.open", "pathlib.Path", "Path", "os.path.expanduser", "os.path.join",
    "os.path.exists", "os.path.isfile", "os.listdir", "os.scandir", "os.walk", "glob.glob", "glob.iglob",
    "shutil.copy", "shutil.copy2", "shutil.copyfile", "shutil.copytree", "shutil.make_archive",
    "os.path.expandvars", "pathlib.Path.home", "Path.home",
})  # fmt: skip
_DELETE = frozenset(
    {"shutil.rmtree", "os.remove", "os.unlink", "os.rmdir", "os.removedirs", "send2trash.send2trash"}
)
_SQL = re.compile(r"\b(select|insert|update|delete|drop|create|alter|replace)\b", re.I)
_EXITS = frozenset({"sys.exit", "exit", "quit", "os._exit", "os.kill"})
_BLOCKING = re.compile(
    r"(sleep|wait|input|recv|accept|select|join|get|read|readline|poll|serve_forever|run_forever)$"
)
VAR = "VAR"
_REGEX_LIKE = re.compile(r"\\[sbdwSDW.|()]|\.\*|\(\?[:=!<]|\[\^|\.\+")


@dataclass
class _Fn:
    params: set[str]
    node: ast.AST | None
    validates: bool = False
    nodes: list[ast.AST] = field(default_factory=list)


@dataclass
class _Py:
    tree: ast.Module
    col: Collector
    aliases: dict[str, str] = field(default_factory=dict)
    defs: dict[str, ast.expr] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    taint: dict[str, set[str]] = field(default_factory=dict)
    returns: dict[str, set[str]] = field(default_factory=dict)
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)
    downloaded: set[str] = field(default_factory=set)
    flags: set[str] = field(default_factory=set)
    secret_words: bool = False
    blobs: set[str] = field(default_factory=set)
    # Names being folded right now, so `a = a + "x"` does not recurse forever.
    _folding: set[str] = field(default_factory=set)
    # Every node once, and each function's nodes once: walking the tree again is what costs.
    nodes: list[ast.AST] = field(default_factory=list)
    inside: dict[int, list[ast.AST]] = field(default_factory=dict)

    def walk_fn(self, fn: ast.AST) -> list[ast.AST]:
        """The nodes of a function, walked once."""
        key = id(fn)
        if key not in self.inside:
            self.inside[key] = list(ast.walk(fn))
        return self.inside[key]

    # --- names -----------------------------------------------------------------------------
    def qual(self, node: ast.AST) -> str:
        """The dotted name a call target resolves to, aliases and known variable types applied."""
        if isinstance(node, ast.Name):
            return self.types.get(node.id) or self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            value = node.value
            if isinstance(value, ast.Call) and self.qual(value.func) == "__import__" and value.args:
                return f"{self.fold(value.args[0]) or ''}.{node.attr}"
            base = self.qual(value)
            return f"{base}.{node.attr}" if base else node.attr
        if isinstance(node, ast.Call):
            name = self.qual(node.func)
            if name == "getattr" and len(node.args) >= 2:
                attr = self.fold(node.args[1])
                if attr:
                    return f"{self.qual(node.args[0])}.{attr}"
            return f"{name}()"
        if isinstance(node, ast.Subscript):
            return self.qual(node.value) + "[]"
        return ""

    # --- folding ---------------------------------------------------------------------------
    def fold(self, node: ast.AST | None, *, loose: bool = False, depth: int = 0) -> str | None:
        """The string an expression evaluates to when it is built from constants (VAR for holes if loose)."""
        if node is None or depth > 25:
            return VAR if loose else None
        nxt = depth + 1
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                return node.value
            if isinstance(node.value, bytes):
                return node.value.decode("latin-1")
            return str(node.value) if loose and node.value is not None else None
        if isinstance(node, ast.JoinedStr):
            parts = [self.fold(v, loose=loose, depth=nxt) for v in node.values]
            return None if any(p is None for p in parts) else "".join(p or "" for p in parts)
        if isinstance(node, ast.FormattedValue):
            return self.fold(node.value, loose=loose, depth=nxt)
        if isinstance(node, ast.BinOp):
            left = self.fold(node.left, loose=loose, depth=nxt)
            right = self.fold(node.right, loose=loose, depth=nxt)
            if isinstance(node.op, ast.Add) and left is not None and right is not None:
                return left + right
            if isinstance(node.op, ast.Div) and left is not None and right is not None:
                return f"{left.rstrip('/')}/{right}"
            if isinstance(node.op, ast.Mod) and left is not None and loose:
                return left
            return VAR if loose else None
        if isinstance(node, ast.Name):
            if node.id in self.defs and node.id not in self._folding:
                self._folding.add(node.id)
                try:
                    return self.fold(self.defs[node.id], loose=loose, depth=nxt)
                finally:
                    self._folding.discard(node.id)
            return VAR if loose else None
        if isinstance(node, ast.Attribute):
            if node.attr in self.defs and isinstance(node.value, ast.Name) and node.attr not in self._folding:
                self._folding.add(node.attr)
                try:
                    return self.fold(self.defs[node.attr], loose=loose, depth=nxt)
                finally:
                    self._folding.discard(node.attr)
            return VAR if loose else None
        if isinstance(node, ast.Subscript):
            return self._fold_subscript(node, loose=loose, depth=nxt)
        if isinstance(node, ast.Call):
            return self._fold_call(node, loose=loose, depth=nxt)
        return VAR if loose else None

    def _fold_subscript(self, node: ast.Subscript, *, loose: bool, depth: int) -> str | None:
        value = self.fold(node.value, loose=False, depth=depth)
        if value is not None and isinstance(node.slice, ast.Slice):
            step = node.slice.step
            if (
                isinstance(step, ast.UnaryOp)
                and isinstance(step.operand, ast.Constant)
                and step.operand.value == 1
            ):
                if node.slice.lower is None and node.slice.upper is None:
                    return value[::-1]
        items = self.list_of(node.value)
        index = node.slice
        if items is not None and isinstance(index, ast.Constant) and isinstance(index.value, int):
            if -len(items) <= index.value < len(items) and isinstance(items[index.value], str):
                return str(items[index.value])
        return VAR if loose else None

    def list_of(self, node: ast.AST, depth: int = 0) -> list[str | int] | None:
        """The items of a list or tuple of constants (through a name), else None."""
        if isinstance(node, ast.Name) and node.id in self.defs and depth < 5:
            return self.list_of(self.defs[node.id], depth + 1)
        if isinstance(node, (ast.List, ast.Tuple)):
            out: list[str | int] = []
            for element in node.elts:
                if isinstance(element, ast.Constant) and isinstance(element.value, int):
                    out.append(element.value)
                    continue
                folded = self.fold(element, depth=depth + 1)
                if folded is None:
                    return None
                out.append(folded)
            return out
        return None

    def _fold_call(self, node: ast.Call, *, loose: bool, depth: int) -> str | None:
        name = self.qual(node.func)
        args = node.args
        if isinstance(node.func, ast.Attribute) and node.func.attr == "join" and len(args) == 1:
            sep = self.fold(node.func.value, depth=depth)
            if sep is not None:
                parts = self._join_items(args[0], depth)
                if parts is not None:
                    return sep.join(parts)
        if name == "chr" and args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, int):
            return chr(args[0].value) if 0 <= args[0].value < 0x110000 else None
        if isinstance(node.func, ast.Attribute) and node.func.attr in ("decode", "strip", "lower", "upper"):
            inner = self.fold(node.func.value, loose=loose, depth=depth)
            if inner is not None:
                return inner.strip() if node.func.attr == "strip" else inner
        if isinstance(node.func, ast.Attribute) and node.func.attr == "replace" and len(args) == 2:
            inner = self.fold(node.func.value, depth=depth)
            old, new = self.fold(args[0], depth=depth), self.fold(args[1], depth=depth)
            if inner is not None and old is not None and new is not None:
                return inner.replace(old, new)
        if name in DECODERS or name.endswith(".fromhex"):
            raw = self.fold(args[0], depth=depth) if args else None
            if raw is not None:
                decoded = _decode(name, raw, args, self)
                if decoded is not None:
                    return decoded
        if name in ("str", "bytes", "bytearray", "os.path.expanduser", "Path", "pathlib.Path", "os.fsdecode"):
            if args and not (
                name in ("bytes", "bytearray") and isinstance(args[0], (ast.List, ast.ListComp))
            ):
                return self.fold(args[0], loose=loose, depth=depth)
            if name in ("bytes", "bytearray") and args:
                items = self.list_of(args[0])
                if items is not None and all(isinstance(i, int) and 0 <= i < 256 for i in items):
                    return bytes(int(i) for i in items).decode("latin-1")
        if name in ("os.path.join", "posixpath.join", "pathlib.Path.joinpath") and args:
            pieces = [self.fold(a, loose=loose, depth=depth) for a in args]
            if all(p is not None for p in pieces):
                return "/".join(str(p).rstrip("/") for p in pieces if p is not None)
        if name in ("pathlib.Path.home", "Path.home", "os.path.expanduser.home") or name.endswith(
            "Path.home"
        ):
            return "~"
        if name in ("os.getcwd", "os.getenv") and loose:
            return VAR
        return VAR if loose else None

    def _join_items(self, node: ast.AST, depth: int) -> list[str] | None:
        items = self.list_of(node)
        if items is not None:
            return [str(i) for i in items]
        if isinstance(node, (ast.GeneratorExp, ast.ListComp)) and len(node.generators) == 1:
            gen = node.generators[0]
            if gen.ifs or not isinstance(gen.target, ast.Name):
                return None
            source = self.list_of(gen.iter)
            if source is None and isinstance(gen.iter, ast.Call) and self.qual(gen.iter.func) == "range":
                bounds = [
                    a.value for a in gen.iter.args if isinstance(a, ast.Constant) and isinstance(a.value, int)
                ]
                if len(bounds) == len(gen.iter.args) and 1 <= len(bounds) <= 3 and max(bounds) < 100_000:
                    source = list(range(*bounds))
            if source is None or len(source) > 100_000:
                return None
            out: list[str] = []
            for value in source:
                self.defs[gen.target.id] = ast.Constant(value)
                folded = self._fold_elt(node.elt, depth)
                if folded is None:
                    self.defs.pop(gen.target.id, None)
                    return None
                out.append(folded)
            self.defs.pop(gen.target.id, None)
            return out
        return None

    def _fold_elt(self, elt: ast.expr, depth: int) -> str | None:
        if isinstance(elt, ast.Subscript):
            items = self.list_of(elt.value)
            index = _const_int(elt.slice, self)
            if items is not None and index is not None and -len(items) <= index < len(items):
                return str(items[index])
        if isinstance(elt, ast.Call) and self.qual(elt.func) == "chr" and elt.args:
            index = _const_int(elt.args[0], self)
            return chr(index) if index is not None and 0 <= index < 0x110000 else None
        return self.fold(elt, depth=depth + 1)

    # --- taint -----------------------------------------------------------------------------
    def taint_of(self, node: ast.AST | None, fn: _Fn | None = None) -> set[str]:
        """Where the data in an expression may come from."""
        tags: set[str] = set()
        if node is None:
            return tags
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name):
                tags |= self.taint.get(sub.id, set())
                if fn is not None and sub.id in fn.params:
                    tags.add("param")
            elif isinstance(sub, ast.Attribute):
                tags |= self.taint.get(sub.attr, set())
                if self.qual(sub) == "os.environ":
                    tags.add("environ")
            elif isinstance(sub, ast.Call):
                name = self.qual(sub.func)
                if name in DECODERS or name.endswith(".fromhex"):
                    tags.add("decoded")
                if self.is_fetch(name) or name.startswith("urllib.request.urlopen"):
                    tags.add("remote")
                if name in ("os.getenv", "os.environ.get") and sub.args:
                    key = self.fold(sub.args[0])
                    if key and pat.SECRET_NAME.search(key):
                        tags.add("env_secret")
                if _obfuscating(self, sub, name):
                    tags.add("built")
                short = name.rsplit(".", 1)[-1].removesuffix("()")
                tags |= self.returns.get(short, set())
                if any(name.startswith(prefix) for prefix, _ in SENSITIVE_CALLS):
                    tags.add("sensitive")
            elif isinstance(sub, ast.Subscript):
                if self.qual(sub.value) == "os.environ":
                    key = self.fold(sub.slice)
                    if key and pat.SECRET_NAME.search(key):
                        tags.add("env_secret")
                if isinstance(sub.slice, ast.Slice) and sub.slice.step is not None:
                    tags.add("built")
        return tags

    def is_fetch(self, name: str) -> bool:
        """A call that downloads."""
        short = name.rsplit(".", 1)[-1]
        if name.endswith(("urlopen", "urlretrieve")) or name in ("wget.download",):
            return True
        return bool(_NET_ROOT.match(name)) and short in (
            "get",
            "head",
            "request",
            "urlopen",
            "stream",
            "fetch",
        )

    def is_send(self, name: str, node: ast.Call) -> bool:
        """A call that sends data out."""
        short = name.rsplit(".", 1)[-1]
        if _NET_ROOT.match(name) and short in ("post", "put", "patch"):
            return True
        if (
            short in ("post", "put", "patch")
            and node.args
            and (self.fold(node.args[0]) or "").startswith("http")
        ):
            return True
        if short in ("sendall", "sendto", "sendmail", "send_message", "storbinary", "storlines"):
            return True
        if name.endswith("urlopen") and (len(node.args) > 1 or any(k.arg == "data" for k in node.keywords)):
            return True
        if name.endswith("Request") and any(k.arg in ("data", "method") for k in node.keywords):
            return True
        if _NET_ROOT.match(name) and short == "request" and node.args:
            return (self.fold(node.args[0]) or "").upper() in ("POST", "PUT", "PATCH")
        return False


def _obfuscating(py: _Py, call: ast.Call, name: str) -> bool:
    """A call that builds text in a way only hiding needs: chr codes, reversal, byte lists, index maps."""
    if name in ("chr", "reversed") or (name == "map" and call.args and py.qual(call.args[0]) == "chr"):
        return True
    if name in ("bytes", "bytearray") and call.args and isinstance(call.args[0], (ast.List, ast.ListComp)):
        return True
    if isinstance(call.func, ast.Attribute) and call.func.attr == "join" and call.args:
        arg = call.args[0]
        if isinstance(arg, (ast.GeneratorExp, ast.ListComp)) and isinstance(
            arg.elt, (ast.Subscript, ast.Call)
        ):
            return True
    return False


def _const_int(node: ast.AST, py: _Py) -> int | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Name) and node.id in py.defs:
        value = py.defs[node.id]
        if isinstance(value, ast.Constant) and isinstance(value.value, int):
            return value.value
    if isinstance(node, ast.BinOp):
        left, right = _const_int(node.left, py), _const_int(node.right, py)
        if left is None or right is None:
            return None
        op = node.op
        if isinstance(op, ast.Add):
            return left + right
        if isinstance(op, ast.Sub):
            return left - right
        if isinstance(op, ast.Mult) and abs(left) < 10**12 and abs(right) < 10**12:
            return left * right
        if isinstance(op, ast.Pow) and 0 <= right <= 64 and abs(left) < 1000:
            return int(left**right)
        if isinstance(op, ast.Mod) and right:
            return left % right
        if isinstance(op, ast.FloorDiv) and right:
            return left // right
    return None


def _decode(name: str, raw: str, args: list[ast.expr], py: _Py) -> str | None:
    data = raw.encode("latin-1", errors="ignore")
    try:
        if name.endswith(("b64decode", "decodebytes", "a2b_base64")):
            out = base64.b64decode(data + b"=" * (-len(data) % 4))
        elif name.endswith("b32decode"):
            out = base64.b32decode(data + b"=" * (-len(data) % 8))
        elif name.endswith("b85decode"):
            out = base64.b85decode(data)
        elif name.endswith("a85decode"):
            out = base64.a85decode(data)
        elif name.endswith(("unhexlify", "a2b_hex", "fromhex", "b16decode")):
            out = bytes.fromhex(raw)
        elif name == "codecs.decode":
            codec = py.fold(args[1]) if len(args) > 1 else "utf-8"
            if codec and codec.replace("_", "").lower() == "rot13":
                return codecs.decode(raw, "rot13")
            return None
        else:
            return None
    except (binascii.Error, ValueError):
        return None
    return out.decode("utf-8", errors="replace")


def analyse(source: str, col: Collector) -> None:
    """Analyse Python source; code that does not parse falls back to the generic code rules."""
    source = fold_code(source)
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError):
        from app.governance import code

        code.analyse(source, col)
        return
    py = _Py(tree, col)
    py.nodes = list(ast.walk(tree))
    _collect(py)
    _Visitor(py, source).visit(tree)
    _module_rules(py)


def _collect(py: _Py) -> None:
    """Imports, assignments, function return taints; propagated a few rounds."""
    for node in py.nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                py.aliases[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                py.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            py.functions[node.name] = node
        elif isinstance(node, (ast.List, ast.Tuple)):
            words = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            if (
                sum(
                    1
                    for w in words
                    if re.fullmatch(r"(KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL|API|AUTH|PRIVATE)", w, re.I)
                )
                >= 2
            ):
                py.secret_words = True
    for node in py.nodes:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None and _is_blob(node.value):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    py.taint.setdefault(target.id, set()).add("blob")
                    py.blobs.add(target.id)
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                name = (
                    target.id
                    if isinstance(target, ast.Name)
                    else target.attr
                    if isinstance(target, ast.Attribute)
                    else None
                )
                if name is None:
                    continue
                py.defs[name] = node.value
                if isinstance(node.value, ast.Call):
                    called = py.qual(node.value.func)
                    if _NET_ROOT.match(called) or called.endswith(("Session", "Client", "socket.socket")):
                        py.types[name] = called + "()"
    flows = [
        n
        for n in py.nodes
        if isinstance(
            n,
            (
                ast.Assign,
                ast.AnnAssign,
                ast.AugAssign,
                ast.For,
                ast.comprehension,
                ast.With,
                ast.AsyncWith,
                ast.Call,
            ),
        )
    ]
    for _ in range(2):
        for node in flows:
            if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and node.value is not None:
                tags = py.taint_of(node.value)
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for sub in ast.walk(target):
                        key = (
                            sub.id
                            if isinstance(sub, ast.Name)
                            else sub.attr
                            if isinstance(sub, ast.Attribute)
                            else None
                        )
                        if key and tags:
                            py.taint.setdefault(key, set()).update(tags)
            if isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add):
                # `cmd += parts[k]` in a loop assembles a string piece by piece: the data-splitting trick.
                if any(isinstance(sub, ast.Subscript) for sub in ast.walk(node.value)) and isinstance(
                    node.target, ast.Name
                ):
                    py.taint.setdefault(node.target.id, set()).add("built")
            elif isinstance(node, (ast.For, ast.comprehension)):
                tags = py.taint_of(node.iter)
                for sub in ast.walk(node.target):
                    if isinstance(sub, ast.Name) and tags:
                        py.taint.setdefault(sub.id, set()).update(tags)
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    if item.optional_vars is not None and isinstance(item.optional_vars, ast.Name):
                        tags = py.taint_of(item.context_expr)
                        if tags:
                            py.taint.setdefault(item.optional_vars.id, set()).update(tags)
            elif isinstance(node, ast.Call):
                _propagate_call(py, node)
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr in (
                    "append",
                    "extend",
                    "insert",
                    "add",
                    "update",
                ):
                    if isinstance(func.value, ast.Name):
                        tags = set().union(*(py.taint_of(a) for a in node.args)) if node.args else set()
                        if tags:
                            py.taint.setdefault(func.value.id, set()).update(tags)
        for name, fn in py.functions.items():
            tags = set()
            for sub in py.walk_fn(fn):
                if isinstance(sub, ast.Return) and sub.value is not None:
                    tags |= py.taint_of(sub.value)
            if tags:
                py.returns[name] = tags


def _propagate_call(py: _Py, node: ast.Call) -> None:
    """Arguments' taint flows into the parameters of a function defined in this module."""
    target = (
        node.func.id
        if isinstance(node.func, ast.Name)
        else node.func.attr
        if isinstance(node.func, ast.Attribute)
        else None
    )
    fn = py.functions.get(target or "")
    if fn is None:
        return
    params = [a.arg for a in fn.args.args]
    if params and params[0] in ("self", "cls") and isinstance(node.func, ast.Attribute):
        params = params[1:]
    for param, arg in zip(params, node.args, strict=False):
        tags = py.taint_of(arg) - {"param"}
        if tags:
            py.taint.setdefault(param, set()).update(tags)
    for keyword in node.keywords:
        if keyword.arg in params:
            tags = py.taint_of(keyword.value) - {"param"}
            if tags:
                py.taint.setdefault(keyword.arg, set()).update(tags)


class _Visitor(ast.NodeVisitor):
    """Walks the tree once with the enclosing function known, applying the call and loop rules."""

    def __init__(self, py: _Py, source: str) -> None:
        self.py = py
        self.col = py.col
        self.source = source
        self.lines = source.split("\n")
        self.stack: list[_Fn] = []
        self.docstrings = _docstrings(py.nodes)

    @property
    def fn(self) -> _Fn | None:
        return self.stack[-1] if self.stack else None

    def snippet(self, node: ast.AST) -> str:
        """The source line a node starts on (get_source_segment re-splits the whole file per call)."""
        line = getattr(node, "lineno", 0)
        return self.lines[line - 1].strip() if 0 < line <= len(self.lines) else ""

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:  # noqa: N802 - ast API
        self._function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:  # noqa: N802 - ast API
        self._function(node)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        params = {a.arg for a in node.args.args + node.args.kwonlyargs} - {"self", "cls"}
        validates = False
        for sub in self.py.walk_fn(node):
            if isinstance(sub, ast.Call):
                name = self.py.qual(sub.func).rsplit(".", 1)[-1]
                if name in (
                    "basename",
                    "realpath",
                    "abspath",
                    "normpath",
                    "resolve",
                    "commonpath",
                    "secure_filename",
                    "is_relative_to",
                    "relative_to",
                    "commonprefix",
                ):
                    validates = True
            if isinstance(sub, ast.Constant) and sub.value == "..":
                validates = True
        self.stack.append(_Fn(params, node, validates, self.py.walk_fn(node)))
        self.generic_visit(node)
        self.stack.pop()

    def visit_Constant(self, node: ast.Constant) -> None:  # noqa: N802 - ast API
        if isinstance(node.value, str) and len(node.value) >= 8 and id(node) not in self.docstrings:
            _string_rules(self.py, node.value, node.lineno)

    def visit_While(self, node: ast.While) -> None:  # noqa: N802 - ast API
        test = node.test
        if isinstance(test, ast.Constant) and bool(test.value) and not _has_exit(self.py, node):
            if self._has_net(node):
                self.col.hit(
                    "RES-NET-FLOOD", node.lineno, self.snippet(test), detail="while True around a request"
                )
            elif not self._blocks(node):
                self.col.hit("RES-INFINITE-LOOP", node.lineno, f"while {self.snippet(test)}:")
        self.generic_visit(node)

    def visit_For(self, node: ast.For) -> None:  # noqa: N802 - ast API
        it = node.iter
        if self.py.qual(it) == "os.environ":
            if self.py.secret_words:
                self.col.hit("EXF-ENV-HARVEST", node.lineno, self.snippet(it))
            self.col.note(Fact.ENV_HARVEST, node.lineno, self.snippet(it))
        if isinstance(it, ast.Call) and self.py.qual(it.func) == "range" and it.args:
            count = _const_int(it.args[-1] if len(it.args) < 3 else it.args[1], self.py)
            if count is not None and count >= 500 and self._has_net(node) and not self._sleeps(node):
                self.col.hit("RES-NET-FLOOD", node.lineno, self.snippet(it), detail=f"{count} requests")
        if isinstance(it, ast.Call) and self.py.qual(it.func) in (
            "os.walk",
            "glob.glob",
            "glob.iglob",
            "pathlib.Path.rglob",
        ):
            root = self.py.fold(it.args[0]) if it.args else None
            if root and root.rstrip("/").lower() in pat.BROAD_TARGETS | {"~", "/"}:
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Call) and self.py.qual(sub.func) in _DELETE:
                        self.col.hit(
                            "DES-DELETE-USERDATA", sub.lineno, self.snippet(sub), detail=f"under {root}"
                        )
                        break
        self.generic_visit(node)

    def _has_net(self, node: ast.AST) -> bool:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call):
                name = self.py.qual(sub.func)
                if (
                    self.py.is_fetch(name)
                    or self.py.is_send(name, sub)
                    or name.endswith((".connect", ".send"))
                ):
                    return True
        return False

    def _sleeps(self, node: ast.AST) -> bool:
        return any(isinstance(s, ast.Call) and self.py.qual(s.func).endswith("sleep") for s in ast.walk(node))

    def _blocks(self, node: ast.AST) -> bool:
        for sub in ast.walk(node):
            if isinstance(sub, (ast.Await, ast.Yield, ast.YieldFrom)):
                return True
            if isinstance(sub, ast.Call) and _BLOCKING.search(self.py.qual(sub.func).rsplit(".", 1)[-1]):
                return True
        return False

    def visit_BinOp(self, node: ast.BinOp) -> None:  # noqa: N802 - ast API
        if isinstance(node.op, (ast.Mult, ast.Pow)):
            sides = (node.left, node.right)
            seq = any(
                isinstance(s, (ast.List, ast.ListComp, ast.Tuple))
                or (isinstance(s, ast.Constant) and isinstance(s.value, (str, bytes)))
                for s in sides
            )
            size = max((_const_int(s, self.py) or 0) for s in sides)
            if seq and size >= 10_000_000:
                self.col.hit("RES-MEMORY-BOMB", node.lineno, self.snippet(node))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:  # noqa: N802 - ast API
        py, col = self.py, self.col
        name = py.qual(node.func)
        short = name.rsplit(".", 1)[-1]
        line = node.lineno
        snippet = self.snippet(node)
        first = node.args[0] if node.args else None
        if name in EXEC_FUNCS and first is not None:
            self._exec(node, first, snippet)
        elif name in SHELL_FUNCS or (name.startswith("subprocess.") and short[:1].islower()):
            self._shell(node, name, snippet)
        if py.is_fetch(name) or py.is_send(name, node):
            self._network(node, name, snippet)
        if name in _PATH_FUNCS or short in (
            "read_text",
            "read_bytes",
            "write_text",
            "write_bytes",
            "open",
            "glob",
            "rglob",
            "iterdir",
            "exists",
        ):
            self._paths(node, name, short, snippet)
        if name in _DELETE or short in ("rmtree", "unlink", "rmdir"):
            target = (
                py.fold(first, loose=True)
                if first is not None
                else py.fold(getattr(node.func, "value", None), loose=True)
            )
            if target and (target.rstrip("/").lower() in pat.BROAD_TARGETS or target.strip() in ("~", "/")):
                col.hit(
                    "DES-RM-BROAD",
                    line,
                    snippet,
                    detail=target,
                    shift=1 if target.strip() in ("~", "/", "~/") else 0,
                )
        self._environment(node, name, snippet)
        for prefix, what in SENSITIVE_CALLS:
            if name.startswith(prefix):
                col.hit("EXF-SENSITIVE-COLLECT", line, snippet, detail=what)
                col.note(Fact.SENSITIVE, line, snippet)
                break
        if (
            short in ("execute", "executemany", "executescript", "read_sql", "read_sql_query")
            and first is not None
        ):
            if _dynamic_sql(py, first):
                col.hit("UNS-SQL-INJECTION", line, snippet)
        if name in _OUTPUT and node.args:
            self._recipe(node, name, snippet)
        if name == "marshal.loads":
            col.hit("OBF-COMPILED", line, snippet, detail="loads Python bytecode from data", shift=1)
        if name == "os.dup2":
            py.flags.add("dup2")
        if short == "connect" and "socket" in name:
            py.flags.add("connect")
        if name == "pty.spawn":
            py.flags.add("pty")
        if name in ("os.chmod",) and len(node.args) >= 2:
            target = py.fold(node.args[0], loose=True) or ""
            mode = _const_int(node.args[1], py) or 0
            if mode & 0o111 and target.rsplit("/", 1)[-1] in py.downloaded:
                col.hit("RCE-DOWNLOAD-EXEC", line, snippet, detail="makes a downloaded file executable")
            if mode & 0o4000 or mode & 0o002:
                col.hit("PRIV-CHMOD", line, snippet)
        if short in ("CronTab",) or name.startswith("crontab."):
            col.hit("PER-CRON", line, snippet)
        if name.endswith("SetValueEx") and "run" in snippet.lower():
            col.hit("PER-SERVICE", line, snippet)
        if short in ("encrypt", "encrypt_file") or name.endswith(("Fernet", "AES.new")):
            py.flags.add("encrypt")
        if name in ("os.walk", "glob.glob", "pathlib.Path.rglob") or short == "rglob":
            py.flags.add("walk")
        if name in _DELETE or short == "unlink":
            py.flags.add("delete")
        if short == "fork" and name.startswith("os"):
            py.flags.add("fork")
        self.generic_visit(node)

    def _recipe(self, node: ast.Call, name: str, snippet: str) -> None:
        """Something derived from an opaque literal is printed or run: a payload decoded at run time."""
        for arg in node.args:
            if _is_blob(arg) or (isinstance(arg, ast.Name) and arg.id in self.py.blobs):
                continue
            if "blob" in self.py.taint_of(arg, self.fn):
                self.col.hit("OBF-DECODE-RECIPE", node.lineno, snippet, detail=f"decoded text goes to {name}")
                return

    def _exec(self, node: ast.Call, arg: ast.expr, snippet: str) -> None:
        py, col, line = self.py, self.col, node.lineno
        tags = py.taint_of(arg, self.fn)
        col.note(Fact.EXEC, line, snippet)
        if "remote" in tags:
            col.hit("RCE-EXEC-REMOTE", line, snippet)
        if "decoded" in tags:
            col.hit("RCE-DECODE-EXEC", line, snippet)
        folded = py.fold(arg)
        if folded is not None:
            if "built" in tags or "decoded" in tags:
                col.hit("OBF-DYNAMIC-EXEC", line, snippet)
            if len(folded) > 4:
                analyse(
                    folded,
                    col.child(
                        context=Context.DECODED if tags & {"decoded", "built"} else None, pin_line=line
                    ),
                )
            return
        if tags & {"remote", "decoded"}:
            return
        if "param" in tags:
            col.hit("UNS-EVAL-INPUT", line, snippet)
        elif "built" in tags:
            col.hit("OBF-DYNAMIC-EXEC", line, snippet)
        else:
            col.hit("UNS-EXEC-DYNAMIC", line, snippet)

    def _shell(self, node: ast.Call, name: str, snippet: str) -> None:
        py, col, line = self.py, self.col, node.lineno
        col.note(Fact.EXEC, line, snippet)
        first = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "args"), None)
        if first is None:
            return
        tags = py.taint_of(first, self.fn)
        items = first.elts if isinstance(first, (ast.List, ast.Tuple)) else None
        if items is not None:
            parts = [py.fold(e, loose=True) or VAR for e in items]
            if name.startswith("os.exec") or name.startswith("os.spawn"):
                parts = parts[1:] if len(parts) > 1 else parts
            command = shlex.join(parts)
        else:
            command = py.fold(first, loose=True) or VAR
        strict = (py.fold(first) is not None) or (
            items is not None and all(py.fold(e) is not None for e in items)
        )
        if "remote" in tags:
            col.hit("RCE-EXEC-REMOTE", line, snippet)
        if "decoded" in tags:
            col.hit("RCE-DECODE-EXEC", line, snippet)
        if "built" in tags:
            col.hit("OBF-DYNAMIC-EXEC", line, snippet)
        if command != VAR:
            from app.governance import shell

            context = Context.DECODED if tags & {"decoded", "built"} else None
            shell.analyse(command, col.child(context=context, pin_line=line))
        shell_true = any(
            k.arg == "shell" and isinstance(k.value, ast.Constant) and k.value.value for k in node.keywords
        )
        if (
            not strict
            and items is None
            and (shell_true or name in ("os.system", "os.popen"))
            and "param" in tags
        ):
            col.hit("UNS-SHELL-INJECTION", line, snippet)
        if name == "pty.spawn":
            py.flags.add("pty")

    def _network(self, node: ast.Call, name: str, snippet: str) -> None:
        py, col, line = self.py, self.col, node.lineno
        # A GET that carries parameters sends them just the same.
        sending = py.is_send(name, node) or any(
            k.arg in ("params", "data", "json", "files") for k in node.keywords
        )
        url_node = (
            node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "url"), None)
        )
        if name.endswith("request") and len(node.args) >= 2:
            url_node = node.args[1]
        url = py.fold(url_node, loose=True) if url_node is not None else None
        if url and URL.match(url):
            check_url(col, url, line, snippet, sending=sending)
        else:
            col.note(Fact.NET_CALL, line, snippet)
            if sending:
                col.note(Fact.NET_SEND, line, snippet)
        if name.endswith("urlretrieve") and len(node.args) >= 2:
            target = py.fold(node.args[1], loose=True)
            if target:
                py.downloaded.add(target.rsplit("/", 1)[-1])
        py.flags.add("fetch")
        body = [
            k.value for k in node.keywords if k.arg in ("data", "json", "params", "files", "body", "content")
        ]
        if sending:
            body += node.args[1:2]
        tags: set[str] = set()
        for value in body:
            tags |= py.taint_of(value, self.fn)
        if "env_secret" in tags:
            col.hit("EXF-BODY-SECRET", line, snippet)
        if tags & {"environ", "secret"}:
            col.hit(
                "EXF-SECRET-SEND",
                line,
                snippet,
                detail="the environment or a credential file goes in the request",
            )
        if "sensitive" in tags:
            col.hit("EXF-COLLECT-SEND", line, snippet)

    def _paths(self, node: ast.Call, name: str, short: str, snippet: str) -> None:
        py, col, line = self.py, self.col, node.lineno
        candidates = list(node.args[:1])
        if isinstance(node.func, ast.Attribute) and short in (
            "read_text",
            "read_bytes",
            "write_text",
            "write_bytes",
            "open",
            "glob",
            "rglob",
            "iterdir",
            "exists",
        ):
            candidates.append(node.func.value)
        mode = ""
        if name in ("open", "io.open", "codecs.open") and len(node.args) > 1:
            mode = py.fold(node.args[1]) or ""
        mode = next((py.fold(k.value) or "" for k in node.keywords if k.arg == "mode"), mode)
        writing = any(c in mode for c in "wax+") or short in ("write_text", "write_bytes")
        for candidate in candidates:
            path = py.fold(candidate, loose=True)
            if not path or path == VAR:
                continue
            if not writing and pat.is_secret_path(path):
                col.hit("EXF-SECRET-PATH", line, snippet, detail=path)
                col.note(Fact.SECRET_ACCESS, line, snippet)
                py.taint.setdefault("__secret_read__", set()).add("secret")
            if writing:
                from app.governance.shell import _write_target

                _write_target(path, "", line, snippet, col)
                if "fetch" in py.flags or any(t for t in py.taint.values() if "remote" in t):
                    py.downloaded.add(path.rsplit("/", 1)[-1])
        if name in ("open", "io.open") and self.fn is not None and not self.fn.validates and node.args:
            if _joins_param(py, node.args[0], self.fn):
                col.hit("UNS-PATH-TRAVERSAL", line, snippet)

    def _environment(self, node: ast.Call, name: str, snippet: str) -> None:
        py, col, line = self.py, self.col, node.lineno
        harvest = False
        if name in ("os.environ.items", "os.environ.keys", "os.environ.values"):
            harvest = True
        elif name in ("dict", "json.dumps", "str", "repr", "list") and node.args:
            harvest = py.qual(node.args[0]) == "os.environ"
        dumped = name in ("dict", "json.dumps", "str", "repr", "list")
        if harvest:
            # Copying the environment for a child process is routine; filtering it for secrets is not.
            if py.secret_words or dumped:
                col.hit("EXF-ENV-HARVEST", line, snippet, shift=0 if py.secret_words else -1)
            col.note(Fact.ENV_HARVEST, line, snippet)
            py.taint.setdefault("__environ__", set()).add("environ")


def _docstrings(nodes: list[ast.AST]) -> set[int]:
    found: set[int] = set()
    for node in nodes:
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _has_exit(py: _Py, loop: ast.While) -> bool:
    for sub in _walk_loop(loop):
        if isinstance(sub, (ast.Break, ast.Return, ast.Raise)):
            return True
        if isinstance(sub, ast.Call) and py.qual(sub.func) in _EXITS:
            return True
    return False


def _walk_loop(loop: ast.While) -> Iterator[ast.AST]:
    """The loop body, not descending into nested functions or loops (their breaks are theirs)."""
    todo: list[ast.AST] = list(loop.body)
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                continue
            if isinstance(child, (ast.For, ast.While, ast.AsyncFor)):
                todo.extend(c for c in ast.walk(child) if isinstance(c, (ast.Return, ast.Raise, ast.Call)))
                continue
            todo.append(child)


def _dynamic_sql(py: _Py, node: ast.AST, depth: int = 0) -> bool:
    """An SQL statement built with f-strings, %, + or .format from non-constant parts."""
    if isinstance(node, ast.Name) and node.id in py.defs and depth < 3:
        return _dynamic_sql(py, py.defs[node.id], depth + 1)
    template = ""
    dynamic = False
    if isinstance(node, ast.JoinedStr):
        template = "".join(
            v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)
        )
        dynamic = any(isinstance(v, ast.FormattedValue) and py.fold(v.value) is None for v in node.values)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        template = py.fold(node, loose=True) or ""
        dynamic = py.fold(node) is None
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        template = py.fold(node.func.value) or ""
        dynamic = True
    return dynamic and bool(_SQL.search(template))


def _joins_param(py: _Py, node: ast.AST, fn: _Fn, depth: int = 0) -> bool:
    """A path made by putting a parameter after a fixed base directory."""
    if isinstance(node, ast.Name) and depth < 3:
        local = _local_def(fn, node.id)
        return local is not None and _joins_param(py, local, fn, depth + 1)
    if (
        isinstance(node, ast.Call)
        and py.qual(node.func) in ("os.path.join", "posixpath.join")
        and len(node.args) >= 2
    ):
        base = py.fold(node.args[0])
        return bool(base) and any(isinstance(a, ast.Name) and a.id in fn.params for a in node.args[1:])
    if isinstance(node, ast.JoinedStr) and node.values:
        head = node.values[0]
        starts_fixed = isinstance(head, ast.Constant) and str(head.value).startswith(("/", "~", "./"))
        has_param = any(
            isinstance(v, ast.FormattedValue) and isinstance(v.value, ast.Name) and v.value.id in fn.params
            for v in node.values
        )
        return starts_fixed and has_param
    return False


def _local_def(fn: _Fn, name: str) -> ast.expr | None:
    if fn.node is None:
        return None
    for sub in fn.nodes:
        if isinstance(sub, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in sub.targets):
            return sub.value
    return None


def _string_rules(py: _Py, value: str, line: int) -> None:
    """Rules on a string literal: reverse shells, odd hosts, encoded payloads (not in detection patterns)."""
    col = py.col
    if _REGEX_LIKE.search(value):
        # A scanner's own signatures name the attacks they look for.
        return
    if re.search(r"/dev/(tcp|udp)/", value):
        col.hit("RCE-REVERSE-SHELL", line, value)
    from app.governance.code import COMMAND_CHAIN

    if COMMAND_CHAIN.search(value):
        # A stored command line that downloads and runs, or pipes into a shell, is the payload itself.
        from app.governance import shell

        shell.analyse(value, col.child(pin_line=line))
    if "stratum+tcp://" in value:
        col.hit("RES-MINER", line, value)
    for match in URL.finditer(value):
        classify_url(col, match.group(), line, value)
    if len(value) >= 20 and col.depth <= 2:
        whole = decode_token(value.strip(), allow85=True)
        found = [whole] if whole is not None else list(payloads(value))
        for payload in found[:5]:
            if payload is None:
                continue
            from app.governance.dispatch import analyse_guess

            analyse_guess(payload.text, col.child(context=Context.DECODED, pin_line=line))


_OUTPUT = frozenset({
    "print", "exec", "eval", "os.system", "sys.stdout.write", "subprocess.run", "subprocess.Popen",
    "subprocess.call", "subprocess.check_output", "os.popen",
})  # fmt: skip


def _is_blob(node: ast.AST) -> bool:
    """An opaque string literal, or a long list of small integers (byte values)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return opaque(node.value)
    if isinstance(node, (ast.List, ast.Tuple)) and len(node.elts) >= 20:
        return all(isinstance(e, ast.Constant) and isinstance(e.value, int) for e in node.elts)
    return False


def _module_rules(py: _Py) -> None:
    col = py.col
    if "dup2" in py.flags and ("connect" in py.flags or "pty" in py.flags):
        col.hit("RCE-REVERSE-SHELL", 1, "socket connected to the standard streams (os.dup2)")
    elif "pty" in py.flags and "connect" in py.flags:
        col.hit("RCE-REVERSE-SHELL", 1, "pty.spawn over a socket")
    if {"encrypt", "walk", "delete"} <= py.flags:
        col.hit("DES-RANSOM", 1, "encrypts files found by walking a tree and deletes them")
    if "fork" in py.flags:
        for node in py.nodes:
            if isinstance(node, ast.While) and any(
                isinstance(s, ast.Call) and py.qual(s.func) == "os.fork" for s in ast.walk(node)
            ):
                col.hit("RES-FORK-BOMB", node.lineno, "os.fork() in a loop")
                break
