"""The services routes: list the instances' replicas, start a new instance of one of the app's
services (owned by the caller), and start, stop, restart, reload or remove an instance. An instance
has an ``owner`` (None: nobody's, e.g. an autostart one): without view-others a user sees only their
own; controlling one needs ``can_modify`` of its owner. Each change is audited."""

from __future__ import annotations

import msgspec

from ..service_types import ServiceAction, ServiceRecord
from ..services import ServiceNotFound, check_name
from . import access
from .errors import Conflict, NotFound
from .routing import Call, Router
from .schemas import Page, PageQuery, ReloadBody, Removed, ServiceBody

router = Router("services")

#: from an instance (made or listed) to the routes of that instance
INSTANCE_LINKS = tuple((name, f"services_{name}", "name", "/items/0/name") for name in
                       ("get_service", "start", "stop", "restart", "reload", "remove"))  # fmt: skip


def public(row: ServiceRecord) -> ServiceRecord:
    """A replica as answered: its run's fencing token left out."""
    return row if row.token is None else msgspec.structs.replace(row, token=None)


def missing(name: str) -> str:
    """The one message for an instance that does not exist, or that the user may not see."""
    return str(ServiceNotFound(name))


def find_instance(call: Call, name: str) -> list[ServiceRecord]:
    """The instance's replicas; 404 if there is none or the user may not see it."""
    rows = call.app.services(name)
    if not rows or not call.user.can_view(rows[0].owner):
        raise NotFound(missing(name))
    return rows


def changeable_instance(call: Call, name: str) -> list[ServiceRecord]:
    """The instance's replicas, if the user may control it (404 / 403 otherwise)."""
    rows = find_instance(call, name)
    access.modifiable(call.user, rows[0].owner, missing(name), f"service instance {name!r}")
    return rows


@router.get("/api/services", query=PageQuery, answer=Page[ServiceRecord], links=INSTANCE_LINKS)
def list_services(call: Call) -> Page[ServiceRecord]:
    """Every replica of every instance the caller may see, by name and replica."""
    wanted: PageQuery = call.query
    rows = [public(row) for row in call.app.services() if call.user.can_view(row.owner)]
    end = wanted.offset + wanted.limit
    return Page(items=rows[wanted.offset : end], next_offset=end if len(rows) > end else None)


@router.get("/api/services/{name}", answer=Page[ServiceRecord], errors=(404,))
def get_service(call: Call) -> Page[ServiceRecord]:
    """One instance's replicas."""
    return Page(items=[public(row) for row in find_instance(call, call.params["name"])])


@router.post("/api/services", body=ServiceBody, answer=Page[ServiceRecord], status=201, errors=(403, 409, 413, 422),
             links=INSTANCE_LINKS)  # fmt: skip
def start_new(call: Call) -> Page[ServiceRecord]:
    """Start a new instance of one of the app's services, with its parameters checked now.

    It is the caller's (a system user may give another ``owner``); an existing name is a 409 (start
    it with ``POST /api/services/{name}/start``)."""
    body: ServiceBody = call.body
    owner = access.new_owner(call.user, body.owner)
    app = call.app
    svc = app.service_def(body.service)  # UnknownService: 422
    instance = check_name(body.name or svc.name)
    rows = app.new_service_instance(svc, instance, replicas=body.replicas, owner=owner, params=dict(body.params))
    if rows is None:
        if call.user.can_view(_owner(call, instance)):
            raise Conflict(f"service instance {instance!r} exists: start it with POST /api/services/{instance}/start")
        raise Conflict(f"the name {instance!r} is taken")
    call.audit("service.create", instance, {"service": svc.name, "replicas": body.replicas or svc.options.replicas})
    return Page(items=[public(row) for row in rows])


def _owner(call: Call, instance: str) -> str | None:
    """The owner of an instance (None: nobody's, or none)."""
    rows = call.app.services(instance)
    return rows[0].owner if rows else None


def _control(call: Call, action: ServiceAction) -> Page[ServiceRecord]:
    """Start, stop or restart the instance of the path, if the user may; audited."""
    name = call.params["name"]
    changeable_instance(call, name)
    app = call.app
    if action is ServiceAction.START:  # the stored instance, whatever app.start_service would make of its name
        rows = app.backend.control_service(name, action, None, app.clock())
    elif action is ServiceAction.STOP:
        rows = app.stop_service(name)
    else:
        rows = app.restart_service(name)
    if not rows:
        raise NotFound(missing(name))
    call.audit(f"service.{action.value}", name)
    return Page(items=[public(row) for row in rows])


@router.post("/api/services/{name}/start", answer=Page[ServiceRecord], errors=(403, 404))
def start(call: Call) -> Page[ServiceRecord]:
    """Start an instance again (a stopped or failed one)."""
    return _control(call, ServiceAction.START)


@router.post("/api/services/{name}/stop", answer=Page[ServiceRecord], errors=(403, 404))
def stop(call: Call) -> Page[ServiceRecord]:
    """Stop every replica of the instance; it stays stopped until started again."""
    return _control(call, ServiceAction.STOP)


@router.post("/api/services/{name}/restart", answer=Page[ServiceRecord], errors=(403, 404))
def restart(call: Call) -> Page[ServiceRecord]:
    """Stop the instance's runs and start them again with the stored parameters."""
    return _control(call, ServiceAction.RESTART)


@router.post("/api/services/{name}/reload", body=ReloadBody, answer=Page[ServiceRecord], errors=(403, 404, 413, 422))
def reload(call: Call) -> Page[ServiceRecord]:
    """Restart the instance with these parameters merged into the stored ones (checked first)."""
    name = call.params["name"]
    changeable_instance(call, name)
    body: ReloadBody = call.body
    rows = call.app.reload_service(name, unset=body.unset, **body.params)
    call.audit("service.reload", name, {"params": sorted(body.params), "unset": sorted(body.unset)})
    return Page(items=[public(row) for row in rows])


@router.delete("/api/services/{name}", answer=Removed, errors=(403, 404))
def remove(call: Call) -> Removed:
    """Delete the instance: its runs stop (their workers find them gone)."""
    name = call.params["name"]
    changeable_instance(call, name)
    removed = call.app.remove_service(name)
    if not removed:
        raise NotFound(missing(name))
    call.audit("service.remove", name)
    return Removed(removed=True)
