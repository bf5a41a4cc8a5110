# Poor Man's Configurator, as nanoGPT's. Exec'd by train.py, sample.py and fisher_quality.py after their config
# globals:
#
# $ python train.py config/override_file.py --batch_size=32
#
# runs config/override_file.py, then sets batch_size = 32. The keys are the script's `config_keys` (else its globals
# of plain types). Both kinds of override may only set known keys (a typo is an error that suggests the nearest one)
# and must keep the default's type: an int is accepted for a float, a float key also takes None (off, where the
# script allows it, as train.py's grad_clip), and a key whose default is None (off, or the method's own choice) takes
# None, a number or a string. Anything else is an error that names the key. -h or --help prints the script's docstring and its keys with their defaults and comments.
# (Comments, not a docstring: a docstring here would replace the script's __doc__ when exec'd in its globals.)

import builtins
import os
import sys
from ast import literal_eval


def _checked(key, value, defaults):
    if key not in defaults:
        from difflib import get_close_matches
        near = get_close_matches(key, defaults, n=1)
        hint = f"did you mean {near[0]!r}?" if near else "no known key is close"
        raise ValueError(f"unknown config key {key!r}; {hint} (python {sys.argv[0]} --help lists the keys)")
    old = defaults[key]
    if old is None:  # e.g. kl_clip = None: off, or a number; solve = None: the method's own, or a name
        if value is None or type(value) in (int, float, str):
            return value
        raise TypeError(f"config key {key!r} must be None, a number or a string like its default None, "
                        f"got {type(value).__name__} {value!r}")
    if type(value) is type(old):
        return value
    if type(old) is float and type(value) is int:
        return float(value)
    if type(old) is float and value is None:  # off, where the script allows it (train.py: grad_clip; it checks)
        return value
    raise TypeError(f"config key {key!r} must be {type(old).__name__} like its default {old!r}, "
                    f"got {type(value).__name__} {value!r}")


def _usage(defaults):
    """The calling script's docstring, then each key = its default, with the comment beside it in the script."""
    import ast
    import io
    import tokenize
    path = globals().get('__file__')
    source = open(path).read() if path else ''
    comments = {t.start[0]: t.string.lstrip('#').strip()
                for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT}
    end_line = {}  # key -> last line of its first top-level assignment (the default, not a later reassignment)
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    end_line.setdefault(target.id, node.end_lineno)
    print((globals().get('__doc__') or '').strip())
    print(f"\nusage: python {sys.argv[0]} [config_file.py ...] [--key=value ...]; the config keys and their defaults:")
    lines = [(f"{key} = {value!r}", comments.get(end_line.get(key))) for key, value in defaults.items()]
    width = min(40, max((len(line) for line, _ in lines), default=0))
    for line, comment in lines:
        print(f"  {line:<{width}}  # {comment}" if comment else f"  {line}")


# the script's config_keys, else (a script that defines none) its globals of plain types
_keys = globals().get('config_keys') or [k for k, v in globals().items()
                                         if not k.startswith('_') and (v is None or type(v) in (int, float, bool, str))]
_defaults = {k: globals()[k] for k in _keys}
if '-h' in sys.argv[1:] or '--help' in sys.argv[1:]:
    _usage(_defaults)
    sys.exit(0)
_say = print if os.environ.get('RANK', '0') == '0' else (lambda *_: None)  # under torchrun: rank 0 only
for _arg in sys.argv[1:]:
    if '=' not in _arg:
        # a config file: plain assignments, run in a namespace of their own, then checked key by key
        if _arg.startswith('--'):
            raise ValueError(f"argument {_arg!r} looks like an override but has no '=value'")
        _say(f"Overriding config with {_arg}:")
        with open(_arg) as _f:
            _source = _f.read()
        _say(_source)
        _namespace = {}
        exec(builtins.compile(_source, _arg, 'exec'), _namespace)  # train.py's `compile` global shadows the builtin
        for _key, _value in _namespace.items():
            if _key.startswith('_') or type(_value).__name__ == 'module':
                continue
            globals()[_key] = _checked(_key, _value, _defaults)
    else:
        if not _arg.startswith('--'):
            raise ValueError(f"override {_arg!r} must look like --key=value")
        _key, _text = _arg[2:].split('=', 1)
        if isinstance(_defaults.get(_key), str):
            _value = _text  # strings are taken as written: --dataset=shakespeare_char
        else:
            try:
                _value = literal_eval(_text)  # numbers, booleans, None
            except (SyntaxError, ValueError):
                _value = _text
        globals()[_key] = _checked(_key, _value, _defaults)
        _say(f"Overriding: {_key} = {globals()[_key]!r}")
