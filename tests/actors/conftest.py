import pytest


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """Three simulated hosts on this box (ray.cluster_utils.Cluster), each labelled with its name.
    One per pytest process: tests that use it share the `ray` xdist group."""
    import os

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray.cluster_utils import Cluster

    common = {"include_dashboard": False, "object_store_memory": 80 * 1024**2}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "labels": {"rayborg-host": "host-a"}, **common})
    nodes = {"host-a": cluster.head_node}
    for name in ("host-b", "host-c"):
        nodes[name] = cluster.add_node(num_cpus=0, labels={"rayborg-host": name}, **common)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, namespace="rayborg-tests")
    yield {"cluster": cluster, "nodes": nodes}
    ray.shutdown()
    cluster.shutdown()
