from .support import NodeProcess, ThreadedNode


def test_threaded_node_answers_health(node: ThreadedNode) -> None:
    with node.client() as client:
        body = client.get("/v1/health").json()
    assert body["node"] == "eu-west-1" and body["region"] == "eu-west"


def test_process_node_answers_health(node_process: NodeProcess) -> None:
    with node_process.client() as client:
        assert client.get("/v1/health").json()["region"] == "eu-west"
    assert node_process.terminate() == 0
