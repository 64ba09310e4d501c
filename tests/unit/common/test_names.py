from kubeserial_common.core.names import device_env, env_prefix, gateway_name, manager_request_name


def test_names() -> None:
    assert gateway_name("ender3") == "ender3-gateway"
    assert manager_request_name("ender3", "octoprint") == "ender3-octoprint"
    assert env_prefix("sonoff-zigbee") == "KUBESERIAL_SONOFF_ZIGBEE"


def test_device_env_urls() -> None:
    assert device_env("ender3", "kubeserial") == {
        "KUBESERIAL_ENDER3_URL": "rfc2217://ender3-gateway.kubeserial.svc:2217",
        "KUBESERIAL_ENDER3_RAW_URL": "socket://ender3-gateway.kubeserial.svc:3333",
    }
