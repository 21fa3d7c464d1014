"""What a deployable runs now, as the store knows it: read by a bind whose profile names a function
(not by the others), to skip programming a deployable that already runs it."""

from __future__ import annotations

from sqlalchemy import bindparam, or_, select
from sqlmodel import Session

from rayborg.store.tables import Attribute, Deployable

# The driver's report of the loaded function: the trait (train nova-placement) or, where the driver
# reads the id itself (Intel's afu_id), the `function_id` attribute.
_LOADED = (
    select(Deployable.bitstream_id, Attribute.value)
    .outerjoin(Attribute, (Attribute.deployable_id == Deployable.id)
               & or_(Attribute.key == "function_id", Attribute.key.startswith("trait")
                     & Attribute.value.startswith("CUSTOM_FPGA_FUNCTION_ID_")))
    .where(Deployable.id == bindparam("deployable_id")))


def loaded(session: Session, deployable_id: int) -> tuple[str | None, list[str]]:
    """(the stored bitstream_id, the function traits and ids its driver reports) of a deployable."""
    rows = session.execute(_LOADED, {"deployable_id": deployable_id}).all()
    bitstream_id = rows[0][0] if rows else None
    return bitstream_id, [value for _, value in rows if value is not None]
