"""Example business handlers for the Acme Widgets support line (``dialplans/support.toml``).

``lookup_order`` is what a real handler looks like: a plain, synchronous function (the gateway runs
it on a worker thread, so a blocking database driver is fine), its schema derived from the type
hints and the ``Args:`` section below, its failures raised as :class:`~gateway.errors.ToolError`
with a message the model may repeat to the caller. The orders are fictional, kept in memory; a real
deployment would query its order system here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType

from gateway.errors import ToolError
from gateway.tools import CallContext, tool

__all__ = ["ORDERS", "Order", "lookup_order"]


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    status: str
    items: tuple[str, ...]
    placed_on: str
    delivery: str


ORDERS = MappingProxyType(
    {
        o.order_id: o
        for o in (
            Order("A1001", "shipped", ("Widget Pro", "USB-C cable"), "2026-11-02", "arriving Thursday"),
            Order("A1002", "processing", ("Widget Mini",), "2026-11-09", "ships within 2 business days"),
            Order("A1003", "delivered", ("Widget Pro case",), "2026-10-21", "delivered on 2026-10-24"),
            Order("A1004", "cancelled", ("Widget Max",), "2026-10-30", "no delivery: refunded 2026-11-01"),
        )
    }
)

#: Callers read order numbers aloud: "a one zero zero one", "A-1001", "a 1001".
_SPOKEN = re.compile(r"[\s\-./]")


@tool(timeout_s=5)
def lookup_order(order_id: str, context: CallContext) -> dict[str, object]:
    """Look up an Acme Widgets order by its number and get its status, items and delivery date.

    Args:
        order_id: The order number the caller gives, like "A1001" (a letter and four digits).
    """
    key = _SPOKEN.sub("", order_id).upper()
    order = ORDERS.get(key)
    if order is None:
        email = context.metadata.get("support_email", "our support address")
        raise ToolError(
            f"no order {key!r} was found; ask the caller to check the number, which looks like A1001,"
            f" or to write to {email}"
        )
    context.log.info("order looked up", extra={"order_id": key, "status": order.status})
    return {
        "order_id": order.order_id,
        "status": order.status,
        "items": list(order.items),
        "placed_on": order.placed_on,
        "delivery": order.delivery,
    }
