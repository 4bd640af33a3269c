"""sigprof's hook on wasmtime-py's component model (``wasmtime.component``).

wasmtime-py calls a component's functions through an ``enter_wasm`` of its own
(``wasmtime/component/_enter.py``), not the core one: it takes a closure ``run``
that makes the C call and returns its error, and no store.  Each caller's
``run`` closes over the store it enters (``store``), which is how the hook
finds the capture.  The core hook (``_wasmtime.install_entry_hook``) installs
this one too, with the same guest-call context manager.

Where wasmtime-py enters a component's code without ``enter_wasm``
(``component.Linker.instantiate``, which runs core start functions), that code
is not profiled.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, List, Optional, Tuple

ORIGINAL_ENTER_WASM: Optional[Callable[[Callable[[], Any]], None]] = None
# Every wasmtime-py module that imports the component ``enter_wasm`` by name
# (checked against wasmtime-py's sources by tests/test_enter_wasm_coverage.py).
# wasmtime-py has bound components since 39.0.0; before, there is nothing to hook.
ENTER_WASM_USERS: Tuple[ModuleType, ...] = ()
try:
    import wasmtime.component._enter as _enter
    import wasmtime.component._func as _func
    import wasmtime.component._resources as _resources
    ORIGINAL_ENTER_WASM = _enter.enter_wasm
    ENTER_WASM_USERS = (_func, _resources)
    import wasmtime.component._linker as _linker
    HOST_SLAB: Optional[Any] = _linker.FUNCTIONS     # handle -> the Python host callable
except ImportError:
    HOST_SLAB = None

_installed: List[Callable[[Callable[[], Any]], None]] = []     # the hook now in place


def _store_of(run: Callable[[], Any]) -> Optional[Any]:
    """The store ``run`` closes over, if it closes over one named ``store``."""
    names = getattr(getattr(run, "__code__", None), "co_freevars", ())
    if "store" not in names or run.__closure__ is None:
        return None
    return run.__closure__[names.index("store")].cell_contents


def install_entry_hook(guest_call: Callable[[Any], Any]) -> None:
    """Run every component call inside ``guest_call(store)`` (a context manager that
    wraps the core ``enter_wasm``, which for a component call sees no trap pointer set
    and passes the component ``enter_wasm``'s error through)."""
    uninstall_entry_hook()

    original = ORIGINAL_ENTER_WASM
    if original is None:
        return

    def enter_wasm(run: Callable[[], Any]) -> None:
        store = _store_of(run)
        if store is None:
            return original(run)
        with guest_call(store):
            return original(run)
    _installed.append(enter_wasm)
    for module in ENTER_WASM_USERS:
        setattr(module, "enter_wasm", enter_wasm)


def uninstall_entry_hook() -> None:
    for module in ENTER_WASM_USERS:
        if getattr(module, "enter_wasm") in _installed:
            setattr(module, "enter_wasm", ORIGINAL_ENTER_WASM)
    _installed.clear()


def entry_hook_installed() -> bool:
    return any(getattr(m, "enter_wasm") is not ORIGINAL_ENTER_WASM for m in ENTER_WASM_USERS)


# Component host functions: wasmtime-py calls each through ``func_impl``, which
# looks the callable up in ``component._linker.FUNCTIONS`` (``get(idx)``).
_host_hooks: List[Callable[[int], Any]] = []


def install_host_hook(wrap: Callable[[int, Any], Any]) -> None:
    """Shadow the component host slab's ``get``: it returns ``wrap(idx, callable)``."""
    uninstall_host_hook()
    slab = HOST_SLAB
    if slab is None:
        return
    original: Callable[[int], Any] = type(slab).get.__get__(slab)

    def get(idx: int) -> Any:
        return wrap(idx, original(idx))
    _host_hooks.append(get)
    setattr(slab, "get", get)             # an instance attribute shadows the method


def uninstall_host_hook() -> None:
    slab = HOST_SLAB
    if slab is not None and slab.__dict__.get("get") in _host_hooks:
        del slab.get
    _host_hooks.clear()


def host_hook_installed() -> bool:
    return HOST_SLAB is not None and "get" in HOST_SLAB.__dict__


def install_export_name_hooks(attribute: str) -> None:
    """Name a component's functions fetched by name (``get_func(store, "name")``, or
    by an index ``get_export_index`` made from a name) as ``attribute``."""
    if HOST_SLAB is None:
        return
    from wasmtime.component import _instance
    instance = _instance.Instance
    get_func, get_export_index = instance.get_func, instance.get_export_index

    def named_get_func(self: Any, store: Any, index: Any) -> Any:
        func = get_func(self, store, index)
        name = index if isinstance(index, str) else getattr(index, attribute, None)
        if func is not None and name is not None:
            setattr(func, attribute, name)
        return func

    def named_get_export_index(self: Any, store: Any, name: str, *rest: Any) -> Any:
        index = get_export_index(self, store, name, *rest)
        if index is not None:
            setattr(index, attribute, name)
        return index
    for attr, wrapper, original in (("get_func", named_get_func, get_func),
                                    ("get_export_index", named_get_export_index,
                                     get_export_index)):
        wrapper.__doc__, wrapper.__wrapped__ = original.__doc__, original  # type: ignore
        setattr(instance, attr, wrapper)
