"""Make lava-nc 0.10.0 importable on Python >= 3.11.

lava-nc 0.10.0 (the last release; upstream is archived) declares Python < 3.11. It runs on
3.11 except for one module: ``lava/magma/compiler/var_model.py`` gives dataclass fields
instances of another (unhashable) dataclass as defaults, ``x: ByteEncoder = ByteEncoder()``,
which Python 3.11 rejects ("mutable default ... use default_factory").

:func:`install` registers an import hook for exactly that module, only on Python >= 3.11 and
only while that pattern is in its source: the hook loads the file and rewrites each
``NAME: T = T()`` field default to ``NAME: T = field(default_factory=T)`` before executing
it. Each instance then gets its own default object (what 3.11 requires; the classes never
share or mutate the defaults). Nothing else in Lava is touched.

Lava's message infrastructure also calls ``multiprocessing.set_start_method('fork')`` when
it is first imported, which raises "context has already been set" if anything chose a start
method before, as torch's dynamo ONNX exporter does (it sets ``fork``). :func:`install`
clears a start method that is already ``fork`` (so Lava sets the same one again); any other
choice is left alone, and Lava's own error names it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys

TARGET = "lava.magma.compiler.var_model"
LAVA_MP = "lava.magma.runtime.message_infrastructure.multiprocessing"
_FIELD_DEFAULT = re.compile(r"^(\s+\w+\s*:\s*(\w+)\s*=\s*)\2\(\)\s*$", re.MULTILINE)


def needed() -> bool:
    return sys.version_info >= (3, 11)


def patch_source(source: str) -> str:
    """``var_model.py``'s source with instance defaults turned into default factories."""
    # No import is added, so line numbers (and tracebacks) stay those of the file.
    return _FIELD_DEFAULT.sub(lambda m: f"{m.group(1)}__import__('dataclasses').field(default_factory={m.group(2)})", source)


class _Loader(importlib.machinery.SourceFileLoader):
    def source_to_code(self, data, path, *, _optimize=-1):
        return compile(patch_source(data.decode("utf-8")), path, "exec", dont_inherit=True, optimize=_optimize)

    def get_code(self, fullname):  # never use a cached .pyc of the unpatched file
        return self.source_to_code(self.get_data(self.get_filename(fullname)), self.get_filename(fullname))


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.origin and spec.origin.endswith(".py"):
                return importlib.util.spec_from_file_location(fullname, spec.origin, loader=_Loader(fullname, spec.origin))
        return None


def install() -> None:
    """Register the hook (idempotent; a no-op before Python 3.11 or once the module is loaded)."""
    import multiprocessing as mp

    if LAVA_MP not in sys.modules and mp.get_start_method(allow_none=True) == "fork":
        mp.set_start_method(None, force=True)  # Lava sets "fork" again on import
    if not needed() or TARGET in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
