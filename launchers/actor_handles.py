"""Typed handles of our Ray actors, for the type checker only.

Ray's stubs type the methods of an `ActorHandle` as `Never` (their `__getattr__`), so a call such as
`handle.take.remote(10.0)` would be checked as unreachable code. Each actor module declares, for the
type checker, a subclass of `ActorHandle` that names the actor's methods as `RemoteMethod`s: their
arguments and their results (through `ray.get`) are then checked, and the handle is still an
`ActorHandle` for `ray.kill`. Nothing here imports ray at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ParamSpec, Protocol, TypeVar

if TYPE_CHECKING:
    from ray import ObjectRef

Params = ParamSpec("Params")
Result = TypeVar("Result")


class RemoteMethod(Protocol[Params, Result]):
    """An actor method as its handle offers it: `.remote(...)` starts the call and returns its ObjectRef."""

    def remote(self, *args: Params.args, **kwargs: Params.kwargs) -> ObjectRef[Result]:
        """Call the method on the actor; `ray.get` of the ref is its return value."""
        ...
