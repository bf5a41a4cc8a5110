"""
Poor Man's Configurator, as nanoGPT's. Exec'd by train.py (and sample.py) after their config globals:

$ python train.py config/override_file.py --batch_size=32

runs config/override_file.py, then sets batch_size = 32. Both kinds of override may only touch existing globals,
and must keep their type: an int is accepted for a float, None for a global whose default is None (or that is
None now). Anything else is an error that names the key.
"""

import builtins
import sys
from ast import literal_eval


def _checked(key, value, defaults):
    if key not in defaults:
        raise ValueError(f"unknown config key {key!r}; known keys: {', '.join(sorted(defaults))}")
    old = defaults[key]
    if value is None or old is None or type(value) is type(old):
        return value
    if type(old) is float and type(value) is int:
        return float(value)
    raise TypeError(f"config key {key!r} must be {type(old).__name__} like its default {old!r}, "
                    f"got {type(value).__name__} {value!r}")


_defaults = {k: v for k, v in globals().items()
             if not k.startswith('_') and (v is None or type(v) in (int, float, bool, str))}
for _arg in sys.argv[1:]:
    if '=' not in _arg:
        # a config file: plain assignments, run in a namespace of their own, then checked key by key
        if _arg.startswith('--'):
            raise ValueError(f"argument {_arg!r} looks like an override but has no '=value'")
        print(f"Overriding config with {_arg}:")
        with open(_arg) as _f:
            _source = _f.read()
        print(_source)
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
        print(f"Overriding: {_key} = {globals()[_key]!r}")
