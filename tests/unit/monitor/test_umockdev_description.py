"""Device descriptions for simulated adapters, derived from the recorded FT232R fixture."""

from kubeserial_testing.umockdev import UsbAdapter, adapter_description


def records(text: str) -> dict[str, list[str]]:
    """P: path -> its lines."""
    result: dict[str, list[str]] = {}
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        result[lines[0].removeprefix("P: ")] = lines[1:]
    return result


def test_second_adapter_differs_in_sysfs_path_serial_node_and_links() -> None:
    first = records(adapter_description(UsbAdapter(serial="S1", port=1), tty="ttyUSB0"))
    second = records(adapter_description(UsbAdapter(serial="S2", port=2), tty="ttyUSB1"))
    assert not set(first) & set(second)
    tty = second["/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/ttyUSB1/tty/ttyUSB1"]
    assert "N: ttyUSB1" in tty and "A: dev=188:1" in tty and "E: ID_SERIAL_SHORT=S2" in tty
    assert (
        "E: DEVLINKS=/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_S2-if00-port0"
        " /dev/serial/by-path/pci-0000:00:14.0-usb-0:2:1.0-port0"
    ) in tty
    usb = second["/devices/pci0000:00/0000:00:14.0/usb1/1-2"]
    assert "A: serial=S2" in usb and "A: idVendor=0403" in usb and "A: idProduct=6001" in usb


def test_other_ids_replace_the_fixtures() -> None:
    text = adapter_description(UsbAdapter(serial="X", vendor="10c4", product="ea60"), tty="ttyUSB0")
    assert "A: idVendor=10c4" in text and "E: ID_MODEL_ID=ea60" in text
    assert "0403" not in text and "6001" not in text
