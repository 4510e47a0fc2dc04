# The test harness of the code reward (embedded into grpo-cpp at build time; see
# rewards/code_reward.cpp). It decides pass/fail from evidence the program under test cannot forge:
#
# - The program runs in a child process forked before the harness reads anything secret. The
#   harness then reads the tests and a per-run random token from its stdin (a pipe the child no
#   longer holds; the child's stdin is /dev/null and its stdout goes to stderr) and makes itself
#   non-dumpable, so the child cannot read its memory or descriptors through /proc.
# - The dataset's tests run here, in the harness, never in the program's process. They reach the
#   program's functions through proxies: arguments and results cross a pipe as marshal data of
#   exact built-in types (no subclasses, no code objects). Any other object stays in the child and
#   is seen here as an opaque handle: equal only to itself, with no truth value, so an object
#   whose __eq__ always returns True cannot pass an assert.
# - Only after the tests ran does the harness print "<token> <passed> <total>". A program that
#   exits early, raises SystemExit, patches builtins, assert or the test function in its own
#   process, or kills the harness leaves no such line: it fails.
import os
import sys

# Imports must never come from the run's directory, which the program under test can write: the
# script's directory leaves the path before anything is imported lazily.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import builtins
import ctypes
import importlib
import json
import marshal
import signal
import struct
import types

HANDLE = "\x00grpo-handle"
ITERATOR = "\x00grpo-iterator"
BUILTIN = "\x00grpo-builtin"
MODULE = "\x00grpo-module"
SCALARS = (type(None), bool, int, float, complex, str, bytes)
PLAIN = SCALARS + (tuple, list, dict, set, frozenset)
CONVERTIBLE = (dict, list, tuple, set, frozenset, str, bytes, int, float, complex)
ITERATOR_TYPES = (types.GeneratorType, map, filter, zip, enumerate, reversed, type(iter([])), type(iter(())),
                  type(iter(range(0))), type(iter("")))


def write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def read_exact(fd, n):
    chunks = []
    while n > 0:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError("the program under test closed its end (it exited or crashed)")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def send(fd, message):
    data = marshal.dumps(message)
    write_all(fd, struct.pack("<I", len(data)) + data)


def receive(fd):
    (length,) = struct.unpack("<I", read_exact(fd, 4))
    return marshal.loads(read_exact(fd, length))


def is_plain(value, depth=0):
    kind = type(value)
    if kind not in PLAIN or depth > 200:
        return False
    if kind in (tuple, list, set, frozenset):
        return all(is_plain(item, depth + 1) for item in value)
    if kind is dict:
        return all(is_plain(k, depth + 1) and is_plain(v, depth + 1) for k, v in value.items())
    return True


# ---- the child: the program under test ------------------------------------------------------

def serve(requests, replies):
    objects = []

    def keep(value):
        objects.append(value)
        return (HANDLE, len(objects) - 1)

    def encode(value, depth=0):
        kind = type(value)
        if kind in SCALARS:
            return value
        if depth > 200:
            return keep(value)
        if kind is tuple and value[:1] in ((HANDLE,), (ITERATOR,), (BUILTIN,), (MODULE,)):
            return keep(value)
        if kind in (tuple, list, set, frozenset):
            return kind(encode(item, depth + 1) for item in value)
        if kind is dict:
            return {encode(k, depth + 1): encode(v, depth + 1) for k, v in value.items()}
        if isinstance(value, types.ModuleType):
            return (MODULE, value.__name__)
        for base in CONVERTIBLE:  # a subclass (Counter, defaultdict, namedtuple, ...): its plain contents
            if isinstance(value, base):
                return encode(base(value), depth + 1)
        if isinstance(value, ITERATOR_TYPES):
            return (ITERATOR, [encode(item, depth + 1) for item in value])
        return keep(value)

    def decode(value):
        kind = type(value)
        if kind is tuple and len(value) == 2 and value[0] == HANDLE:
            return objects[value[1]]
        if kind is tuple and len(value) == 2 and value[0] == BUILTIN:
            return getattr(builtins, value[1])
        if kind in (tuple, list, set, frozenset):
            return kind(decode(item) for item in value)
        if kind is dict:
            return {decode(k): decode(v) for k, v in value.items()}
        return value

    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        with open("solution.py", encoding="utf-8") as source:
            code = compile(source.read(), "solution.py", "exec")
        exec(code, namespace)
        names = {name: encode(value) for name, value in list(namespace.items()) if not name.startswith("__")}
        send(replies, ("ready", names))
    except BaseException as error:
        send(replies, ("raise", type(error).__name__, str(error)[:300]))
        return
    while True:
        request = receive(requests)
        try:
            target = objects[request[1]]
            if request[0] == "call":
                result = target(*decode(request[2]), **decode(request[3]))
            elif request[0] == "getattr":
                result = getattr(target, request[2])
            else:
                setattr(target, request[2], decode(request[3]))
                result = None
            send(replies, ("ok", encode(result)))
        except BaseException as error:
            send(replies, ("raise", type(error).__name__, str(error)[:300]))


# ---- the harness: the tests ----------------------------------------------------------------

class ProgramDied(BaseException):
    """The program under test exited or crashed during a call (not catchable as Exception)."""


class Handle:
    """An object that lives in the program's process: it can be called, its attributes read and
    set, and it can be passed back; it equals only itself and has no truth value."""
    __slots__ = ("_id",)

    def __init__(self, ident):
        object.__setattr__(self, "_id", ident)

    def __call__(self, *args, **kwargs):
        return remote(("call", self._id, outgoing(args), outgoing(kwargs)))

    def __getattr__(self, name):
        return remote(("getattr", self._id, name))

    def __setattr__(self, name, value):
        remote(("setattr", self._id, name, outgoing(value)))

    def __bool__(self):
        raise TypeError("an object of the program under test has no truth value here")

    def __repr__(self):
        return f"<object {self._id} of the program under test>"


CHANNEL = {}


def outgoing(value):
    if isinstance(value, Handle):
        return (HANDLE, value._id)
    if getattr(builtins, getattr(value, "__name__", ""), None) is value and not is_plain(value):
        return (BUILTIN, value.__name__)  # int, str, len, ... by name
    kind = type(value)
    if kind in (tuple, list, set, frozenset):
        return kind(outgoing(item) for item in value)
    if kind is dict:
        return {outgoing(k): outgoing(v) for k, v in value.items()}
    if not is_plain(value):
        raise TypeError(f"a {kind.__name__} cannot be passed to the program under test")
    return value


def incoming(value):
    kind = type(value)
    if kind is tuple and len(value) == 2 and value[0] == HANDLE and type(value[1]) is int:
        return Handle(value[1])
    if kind is tuple and len(value) == 2 and value[0] == ITERATOR and type(value[1]) is list:
        return iter([incoming(item) for item in value[1]])
    if kind is tuple and len(value) == 2 and value[0] == MODULE and type(value[1]) is str:
        # The program's imports, as the tests may use them (MBPP's `sys`): standard library only,
        # imported here from the interpreter's own paths (never the run's directory).
        if value[1].partition(".")[0] in getattr(sys, "stdlib_module_names", ()):
            try:
                return importlib.import_module(value[1])
            except ImportError:
                pass
        return None
    if kind in (tuple, list, set, frozenset):
        return kind(incoming(item) for item in value)
    if kind is dict:
        return {incoming(k): incoming(v) for k, v in value.items()}
    return value


def remote(request):
    try:
        send(CHANNEL["requests"], request)
        reply = receive(CHANNEL["replies"])
    except (EOFError, OSError, ValueError) as error:
        raise ProgramDied(str(error)) from None
    if type(reply) is not tuple or not reply or not is_plain(reply):
        raise ProgramDied("the program under test sent a malformed reply")
    if reply[0] == "ok" and len(reply) == 2:
        return incoming(reply[1])
    if reply[0] == "raise" and len(reply) == 3:
        kind = getattr(builtins, str(reply[1]), None)
        if isinstance(kind, type) and issubclass(kind, Exception):
            raise kind(reply[2])
        raise RuntimeError(f"{reply[1]}: {reply[2]}")
    raise ProgramDied("the program under test sent a malformed reply")


def run_tests(spec, names):
    total = 0
    passed = 0
    if spec["kind"] == "humaneval":
        total = 1
        namespace = {"__name__": "__grpo_tests__"}
        try:
            exec(spec.get("prompt", ""), namespace)  # the dataset's helpers (e.g. poly), trusted
        except Exception:
            pass
        try:
            candidate = incoming(names[spec["entry_point"]])
            namespace[spec["entry_point"]] = candidate  # some tests call it by name
            exec(spec["test"], namespace)
            namespace["check"](candidate)
            passed = 1
        except BaseException as error:
            print(f"test failed: {type(error).__name__}: {error}"[:500], file=sys.stderr)
    else:
        shared = {"__name__": "__grpo_tests__"}
        shared.update({name: incoming(value) for name, value in names.items()})
        try:
            exec(spec.get("setup", ""), shared)
        except BaseException as error:
            print(f"test setup failed: {type(error).__name__}: {error}"[:500], file=sys.stderr)
            return 0, len(spec["tests"])
        for index, test in enumerate(spec["tests"]):
            total += 1
            try:
                exec(test, shared)
                passed += 1
            except BaseException as error:
                print(f"test {index} failed: {type(error).__name__}: {error}"[:500], file=sys.stderr)
    return passed, total


def main():
    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0, inherited by the fork below
    requests_read, requests_write = os.pipe()
    replies_read, replies_write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(requests_write)
        os.close(replies_read)
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(2, 1)
        try:
            serve(requests_read, replies_write)
        finally:
            os._exit(0)
    os.close(requests_read)
    os.close(replies_write)
    CHANNEL["requests"] = requests_write
    CHANNEL["replies"] = replies_read
    spec = json.loads(sys.stdin.buffer.read())
    token = spec.pop("token")
    passed, total = 0, len(spec.get("tests", [])) or 1
    try:
        ready = receive(replies_read)
        if type(ready) is tuple and len(ready) == 2 and ready[0] == "ready" and type(ready[1]) is dict and is_plain(ready[1]):
            passed, total = run_tests(spec, ready[1])
        elif type(ready) is tuple and len(ready) == 3:
            print(f"the program failed to load: {ready[1]}: {ready[2]}"[:500], file=sys.stderr)
    except BaseException as error:
        print(f"the program under test failed: {type(error).__name__}: {error}"[:500], file=sys.stderr)
    try:
        os.kill(child, signal.SIGKILL)
    except OSError:
        pass
    sys.stdout.write(f"{token} {passed} {total}\n")
    sys.stdout.flush()
    os._exit(0)


main()
