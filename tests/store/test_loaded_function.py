"""store/loaded_function.py on both databases: what a deployable runs now, as the store knows it: the
stored bitstream id and the function traits / `function_id` its driver reported, nothing else."""

from __future__ import annotations

from factories import add_device

from rayborg.store.loaded_function import loaded
from rayborg.store.tables import Attribute, Deployable


def test_loaded_reads_the_bitstream_and_the_function_traits_and_ids(store):
    tree = add_device(store, traits=("CUSTOM_FPGA_INTEL",))
    dep = tree.deployable_ids[0]
    assert store.query(loaded, dep) == (None, [])  # a vendor trait is no function

    def program(session):
        session.get(Deployable, dep).bitstream_id = "b1"
        session.add(Attribute(deployable_id=dep, key="trait5", value="CUSTOM_FPGA_FUNCTION_ID_ABC"))
        session.add(Attribute(deployable_id=dep, key="function_id", value="0xabc"))
        session.add(Attribute(deployable_id=dep, key="other", value="CUSTOM_FPGA_FUNCTION_ID_NOT_A_TRAIT"))

    store.transact(program)
    bitstream, functions = store.query(loaded, dep)
    assert bitstream == "b1" and sorted(functions) == ["0xabc", "CUSTOM_FPGA_FUNCTION_ID_ABC"]
    assert store.query(loaded, 10**6) == (None, [])  # no such deployable
