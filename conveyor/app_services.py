"""The App's service side: ``@app.service`` declares a long-running service; start, stop, restart,
reload and remove its instances; list them; the sync of autostart instances a worker does at start.
A part of ``App`` (a mixin), kept apart so app.py stays a thin facade. Replicas are run by the
workers' keepers (``conveyor.worker.services``); docs/services.md."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, TypeVar, overload

import msgspec

from . import codec
from .service_types import ServiceAction, ServiceRecord, ServiceSource, ServiceSpec
from .services import Service, ServiceNotFound, ServiceOptions, UnknownService, check_name

if TYPE_CHECKING:
    from .backends.base import Backend

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("conveyor.services")


class ServicesMixin:
    """``App``'s service methods."""

    clock: Callable[[], float]
    service_defs: dict[str, Service]

    @property
    def backend(self) -> Backend:
        raise NotImplementedError  # App's

    # declaring ----------------------------------------------------------------------------------------------
    @overload
    def service(self, fn: Callable[..., Any], /) -> Service: ...
    @overload
    def service(self, fn: None = None, /, *, name: str | None = None, autostart: bool | None = None,
                **options: Any) -> Callable[[Callable[..., Any]], Service]: ...  # fmt: skip
    def service(self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
                autostart: bool | None = None, **options: Any) -> Any:  # fmt: skip
        """Declare a long-running service: ``fn(ctx, **params)``, sync or async, run until asked to stop
        (``ctx.stopping``, ``ctx.wait``, ``async with ctx.running()``). Options (ServiceOptions): queue,
        replicas, local, grace, lease, max_crashes, crash_window, backoff, max_backoff. ``name`` defaults
        to the function's name. ``autostart`` (default: when the function needs no parameters): the
        first worker to start creates an instance named like the service; otherwise instances are
        made with ``start_service``. ``local=True``: one instance in every worker process, started at
        its boot and stopped with it, never moved."""
        unknown = set(options) - set(ServiceOptions.__struct_fields__)
        if unknown:
            raise TypeError(f"unknown service option(s): {', '.join(sorted(unknown))}")

        def register(func: Callable[..., Any]) -> Service:
            service_name = str(name or getattr(func, "__name__", ""))
            probe = Service(func, service_name, ServiceOptions(**options).check())
            start = (not probe.needs_params) if autostart is None else bool(autostart)
            if start and probe.needs_params and not probe.options.local:
                raise ValueError(f"service {service_name!r} needs parameters, so it cannot start by itself: pass "
                                 f"autostart=False and start instances with app.start_service(...)")  # fmt: skip
            if probe.options.local and probe.needs_params:
                raise ValueError(f"local service {service_name!r} starts with no parameters: give them defaults")
            svc = Service(func, service_name, msgspec.structs.replace(probe.options, autostart=start))
            known = self.service_defs.get(service_name)
            if known is not None and known.fn is not func:
                raise ValueError(f"a different function is already declared as service {service_name!r}")
            self.service_defs[service_name] = svc
            return svc

        return register(fn) if fn is not None else register

    def service_def(self, service: str | Service) -> Service:
        """The declared service of that name (or the one given). Raises UnknownService."""
        if isinstance(service, Service):
            return service
        found = self.service_defs.get(service)
        if found is None:
            known = ", ".join(sorted(self.service_defs)) or "none"
            raise UnknownService(f"no service {service!r} is declared in this app (services: {known})")
        return found

    # instances ----------------------------------------------------------------------------------------------
    def start_service(self, service: str | Service, *, name: str | None = None, replicas: int | None = None,
                      owner: str | None = None, **params: Any) -> list[ServiceRecord]:  # fmt: skip
        """Start an instance of ``service`` named ``name`` (default: the service's name) with these
        parameters, checked against the function now; or, if that instance exists, start it again
        (a STOPPED or FAILED one; no parameters then: use ``reload_service`` to change them). A new
        instance belongs to ``owner`` (the web side shows it only to them, and to users who may view
        others'; None: nobody's). ``name``, ``replicas`` and ``owner`` are this method's own: a service
        parameter of one of those names cannot be given here. Returns its replicas' rows."""
        if owner is not None and (not isinstance(owner, str) or not owner):
            raise ValueError(f"owner must be a non-empty string or None, got {owner!r}")
        if isinstance(service, str) and name is None and service not in self.service_defs:
            return self._control(service, ServiceAction.START, None, params, replicas)  # an existing instance
        svc = self.service_def(service)
        instance = check_name(name or svc.name)
        created = self.new_service_instance(svc, instance, replicas=replicas, owner=owner, params=params)
        if created is not None:
            return created
        return self._control(instance, ServiceAction.START, None, params, replicas)

    def new_service_instance(self, svc: Service, name: str, *, replicas: int | None, owner: str | None,
                             params: dict[str, Any]) -> list[ServiceRecord] | None:  # fmt: skip
        """Create the instance ``name`` of ``svc`` (its parameters checked against the function first),
        owned by ``owner``; its replicas' rows, or None if an instance of that name exists (nothing
        written). ``start_service`` and the HTTP API make instances this way."""
        if svc.options.local:
            raise ValueError(f"service {svc.name!r} is local: every worker process runs it, it has no instances")
        count = svc.options.replicas if replicas is None else replicas
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"replicas must be an int >= 1, got {replicas!r}")
        checked = svc.check_params(params)
        spec = ServiceSpec(name=check_name(name), service=svc.name, queue=svc.options.queue, params=checked,
                           replicas=count, source=ServiceSource.API, owner=owner)  # fmt: skip
        if not self.backend.create_service(spec, self.clock()):
            return None
        return self.backend.list_services(name)

    def _control(self, name: str, action: ServiceAction, new_params: dict[str, Any] | None,
                 given: dict[str, Any], replicas: int | None) -> list[ServiceRecord]:  # fmt: skip
        if given or replicas is not None:
            raise ValueError(f"service instance {name!r} exists: start it without parameters, or change them "
                             f"with reload_service({name!r}, ...)")  # fmt: skip
        rows = self.backend.control_service(name, action, new_params, self.clock())
        if not rows:
            raise ServiceNotFound(name)
        return rows

    def stop_service(self, name: str) -> list[ServiceRecord]:
        """Stop every replica of the instance: its runs' stop hooks run, then it is STOPPED, and stays
        so (across worker restarts) until started again. Returns its rows."""
        return self._control(name, ServiceAction.STOP, None, {}, None)

    def restart_service(self, name: str) -> list[ServiceRecord]:
        """Stop the instance's runs and start them again with the stored parameters (a FAILED one too)."""
        return self._control(name, ServiceAction.RESTART, None, {}, None)

    def reload_service(self, name: str, /, *, unset: Collection[str] = (), **params: Any) -> list[ServiceRecord]:
        """Restart the instance with these parameters merged into the stored ones, less those named in
        ``unset`` (the function's default applies to them again); checked against the function first,
        when this app declares the service. Each new run reads them from the store."""
        if isinstance(unset, str):
            raise TypeError(f"unset takes parameter names, e.g. unset=[{unset!r}]")
        both = sorted(set(unset) & params.keys())
        if both:
            raise ValueError(f"parameters both given and unset: {', '.join(both)}")
        rows = self.backend.list_services(name)
        if not rows:
            raise ServiceNotFound(name)
        stored = rows[0].params
        unknown = sorted(key for key in unset if key not in stored)
        if unknown:
            raise ValueError(f"service instance {name!r} has no stored parameter to unset: {', '.join(unknown)}"
                             f" (it has: {', '.join(sorted(stored)) or 'none'})")  # fmt: skip
        merged = {key: value for key, value in stored.items() if key not in unset} | params
        svc = self.service_defs.get(rows[0].service)
        if svc is not None:
            merged = svc.check_params(merged)
        else:  # a service of another app: its parameters are JSON values, at least
            for key, value in params.items():
                codec.check_json(value, f"service instance {name!r} parameter {key!r}")
        rows = self.backend.control_service(name, ServiceAction.RELOAD, merged, self.clock())
        if not rows:
            raise ServiceNotFound(name)
        return rows

    def remove_service(self, name: str) -> bool:
        """Delete the instance: its runs stop (their workers find them gone at the next renewal).
        False if there was none."""
        return self.backend.remove_service(name, self.clock())

    def services(self, name: str | None = None) -> list[ServiceRecord]:
        """Every replica of every instance (or of ``name``), by name and replica: status, worker, when
        it started, restarts, last error, parameters."""
        return self.backend.list_services(name)

    def sync_services(self) -> list[str]:
        """Create the instance of each autostart service of this app that has none (named like the
        service, source CODE), and keep the replica count and queue of existing CODE instances in
        step with the code. Returns the names created or resized. A worker calls it at start."""
        changed: list[str] = []
        existing: dict[str, ServiceRecord] = {}
        for row in self.backend.list_services():
            existing.setdefault(row.name, row)
        now = self.clock()
        for svc in self.service_defs.values():
            if svc.options.local or not svc.options.autostart:
                continue
            found = existing.get(svc.name)
            if found is None:
                spec = ServiceSpec(name=svc.name, service=svc.name, queue=svc.options.queue,
                                   replicas=svc.options.replicas, source=ServiceSource.CODE)  # fmt: skip
                if self.backend.create_service(spec, now):
                    changed.append(svc.name)
            elif (
                found.source is ServiceSource.CODE
                and found.service == svc.name
                and self.backend.resize_service(svc.name, svc.options.replicas, svc.options.queue, now)
            ):
                changed.append(svc.name)
        return changed
