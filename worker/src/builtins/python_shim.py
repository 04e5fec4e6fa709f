# taskfarm's Python shim: runs a Python function for each process taskfarm sends on stdin
# (one JSON line each) and answers on stdout (one JSON line each), as PROTOCOL.md says.
# It is embedded in the worker binary and run as `python3 -c <this file> --function NAME ...`.
import importlib
import importlib.util
import inspect
import json
import os
import sys
import traceback


def options(argv):
    """The --name value pairs of the command line (--check takes no value)."""
    opts, i = {}, 0
    while i < len(argv):
        name = argv[i].lstrip("-")
        if name == "check":
            opts["check"], i = True, i + 1
        else:
            opts[name], i = argv[i + 1], i + 2
    return opts


def load(opts):
    """The user's module, from --file (a path) or --module (a name on sys.path)."""
    for directory in json.loads(opts.get("path", "[]")):
        sys.path.insert(0, directory)
    if "file" in opts:
        path = os.path.abspath(opts["file"])
        sys.path.insert(0, os.path.dirname(path))
        name = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"{opts['file']} is not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(opts["module"])


def function(module, name, what):
    fn = getattr(module, name, None)
    if not callable(fn):
        raise AttributeError(f"the module {module.__name__} has no function `{name}` (the {what})")
    return fn


def accepts(fn):
    """The keyword names fn takes, and whether it takes any (**kwargs)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind == p.VAR_KEYWORD for p in parameters)


def plain(value):
    """numpy scalars and arrays, tuples and sets as values JSON can hold."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"a {type(value).__name__} is not a value taskfarm can record")


def main(argv):
    opts = options(argv)
    # stdout is taskfarm's: the user's print() and C code writing on fd 1 go to stderr.
    reply_to = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    module = load(opts)
    run = function(module, opts["function"], "`function` of the spec")
    setup = function(module, opts["setup"], "`setup` of the spec") if "setup" in opts else None
    if opts.get("check"):
        return 0
    constants = json.loads(opts.get("constants", "{}"))
    names, any_name = accepts(run)
    state = None
    if setup is not None:
        setup_names, setup_any = accepts(setup)
        state = setup(**{k: v for k, v in constants.items() if setup_any or k in setup_names})
    reply_to.write('{"ready": true}\n')
    reply_to.flush()
    extras = [e for e in ("run", "id", "state", "worker", "scratch_dir") if e in names]
    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        request = json.loads(line)
        pid = request["id"]
        try:
            kwargs = dict(constants)
            kwargs.update(request["params"])
            for extra in extras:
                if extra in kwargs:
                    continue
                if extra == "state":
                    kwargs["state"] = state
                elif extra == "scratch_dir":
                    os.makedirs(request["scratch_dir"], exist_ok=True)
                    kwargs["scratch_dir"] = request["scratch_dir"]
                else:
                    kwargs[extra] = request[extra]
            if not any_name:
                # Every parameter is passed (a function that lacks one should say so), but a
                # constant only when the function names it (a spec's constants are among the
                # parameters too).
                kwargs = {
                    k: v
                    for k, v in kwargs.items()
                    if k in names or (k in request["params"] and k not in constants)
                }
            output = run(**kwargs)
            text = json.dumps({"id": pid, "output": {} if output is None else output}, default=plain)
        except Exception as error:
            traceback.print_exc()
            sys.stderr.flush()
            message = f"{type(error).__name__}: {error}".strip()
            text = json.dumps({"id": pid, "error": message})
        reply_to.write(text + "\n")
        reply_to.flush()


try:
    sys.exit(main(sys.argv[1:]))
except Exception as error:
    traceback.print_exc()
    sys.exit(1)
