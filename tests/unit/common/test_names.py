from kubeserial_common.core.names import (
    device_env,
    env_prefix,
    gateway_name,
    manager_name_problem,
    manager_request_name,
)


def test_names() -> None:
    assert gateway_name("ender3") == "ender3-gateway"
    assert manager_request_name("ender3", "octoprint") == "ender3-octoprint"
    assert env_prefix("sonoff-zigbee") == "KUBESERIAL_SONOFF_ZIGBEE"


def test_device_env_urls() -> None:
    assert device_env("ender3", "kubeserial") == {
        "KUBESERIAL_ENDER3_URL": "rfc2217://ender3-gateway.kubeserial.svc:2217",
        "KUBESERIAL_ENDER3_RAW_URL": "socket://ender3-gateway.kubeserial.svc:3333",
    }


def test_manager_name_problem_follows_the_service_name_rules() -> None:
    assert manager_name_problem("ender3", "octoprint") is None
    assert manager_name_problem("d" * 55, "m" * 7) is None  # 63 characters
    too_long = manager_name_problem("d" * 55, "m" * 8)
    assert too_long is not None and "(64 characters)" in too_long and "at most 63" in too_long
    dotted = manager_name_problem("ender3", "octo.print")
    assert dotted is not None and "ender3-octo.print" in dotted and "dot" in dotted
