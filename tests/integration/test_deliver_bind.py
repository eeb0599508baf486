"""smtp_bind_address: the connection comes from the configured local address."""

import socket
import threading

import pytest

from postclient.config.config import Config
from postclient.smtp import engine
from postclient.smtp.request import DeliveryRequest, Recipient

pytestmark = pytest.mark.integration


def _one_shot_server():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    peers = []

    def serve():
        conn, peer = listener.accept()
        peers.append(peer[0])
        conn.sendall(b"421 4.3.2 go away\r\n")
        conn.close()
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], peers, thread


@pytest.mark.parametrize("bind, expected", [("", "127.0.0.1"), ("127.0.0.7", "127.0.0.7")])
def test_bind_address(tmp_path, bind, expected):
    port, peers, thread = _one_shot_server()
    (tmp_path / "main.cf").write_text(f"smtp_bind_address = {bind}\nmaillog_file = {tmp_path}/log\n")
    config = Config.load(str(tmp_path))
    request = DeliveryRequest(queue_id="Q", nexthop=f"[127.0.0.1]:{port}", sender="s@example.com",
                              recipients=[Recipient("r@example.com")], content=b"x\n")
    outcome = engine.deliver(config, request)
    thread.join(5)
    assert peers == [expected]
    assert outcome.results[0].status == "deferred"
    assert "421 4.3.2 go away" in outcome.results[0].text


def test_unusable_bind_address_is_a_connect_failure(tmp_path):
    (tmp_path / "main.cf").write_text("smtp_bind_address = 192.0.2.123\n")
    request = DeliveryRequest(queue_id="Q", nexthop="[127.0.0.1]:9", sender="",
                              recipients=[Recipient("r@example.com")], content=b"x\n")
    outcome = engine.deliver(Config.load(str(tmp_path)), request)
    result = outcome.results[0]
    assert (result.status, result.dsn) == ("deferred", "4.4.1")
    assert result.text.startswith("connect to 127.0.0.1[127.0.0.1]:9: ")
    assert outcome.destination_down is not None
