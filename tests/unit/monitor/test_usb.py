"""What the monitor reads of a USB tty: ids, serials, stable paths, and the SerialPort it publishes."""

from kubeserial_monitor.usb import UsbTty, normalize_usb_id, stable_device_path, usb_tty

BY_ID = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
BY_PATH = "/dev/serial/by-path/pci-0000:00:14.0-usb-0:1:1.0-port0"


def tty(serial: str | None = "A", *, port: int = 1, vendor: str = "0403", product: str = "6001") -> UsbTty:
    return UsbTty(
        sys_path=f"/sys/devices/usb1/1-{port}/1-{port}:1.0/ttyUSB{port}/tty/ttyUSB{port}",
        devnode=f"/dev/ttyUSB{port}",
        vendor=vendor,
        product=product,
        serial=serial,
    )


def test_usb_ids_are_normalised() -> None:
    assert normalize_usb_id(b"0403\n") == "0403"
    assert normalize_usb_id("0xABCD") == "abcd"
    assert normalize_usb_id("403") is None
    assert normalize_usb_id("zzzz") is None
    assert normalize_usb_id(None) is None


def test_by_id_link_is_preferred_over_by_path_and_the_node() -> None:
    assert stable_device_path("/dev/ttyUSB3", [BY_PATH, BY_ID]) == BY_ID
    assert stable_device_path("/dev/ttyUSB3", [BY_PATH]) == BY_PATH
    assert stable_device_path("/dev/ttyUSB3", ["/dev/gps0"]) == "/dev/ttyUSB3"


def test_usb_tty_prefers_parent_attributes_and_merges_links() -> None:
    found = usb_tty(
        sys_path="/sys/x",
        devnode="/dev/ttyUSB0",
        usb_attributes={"idVendor": b"0403", "idProduct": b"6001", "serial": b"A50285BI"},
        properties={"ID_VENDOR_ID": "ffff", "DEVLINKS": f"{BY_ID} {BY_PATH}"},
        links=[BY_PATH],
    )
    assert found is not None
    assert (found.vendor, found.product, found.serial) == ("0403", "6001", "A50285BI")
    assert found.links == (BY_ID, BY_PATH) and found.device_path == BY_ID


def test_usb_tty_falls_back_to_udev_properties() -> None:
    found = usb_tty(
        sys_path="/sys/x",
        devnode="/dev/ttyACM0",
        usb_attributes={},
        properties={"ID_VENDOR_ID": "2341", "ID_MODEL_ID": "0043", "ID_SERIAL_SHORT": "7583"},
    )
    assert found is not None and (found.vendor, found.product, found.serial) == ("2341", "0043", "7583")


def test_not_a_usb_tty() -> None:
    assert usb_tty(sys_path="/sys/x", devnode="/dev/ttyS0", usb_attributes={}, properties={}) is None
    assert (
        usb_tty(
            sys_path="/sys/x",
            devnode=None,
            usb_attributes={"idVendor": "0403", "idProduct": "6001"},
            properties={},
        )
        is None
    )


def test_port_name_is_deterministic_per_node_and_stable_path() -> None:
    with_link = UsbTty(
        sys_path="/sys/x", devnode="/dev/ttyUSB0", vendor="0403", product="6001", serial="A", links=(BY_ID,)
    )
    renumbered = UsbTty(
        sys_path="/sys/y", devnode="/dev/ttyUSB3", vendor="0403", product="6001", serial="A", links=(BY_ID,)
    )
    assert with_link.port_name("node-a") == renumbered.port_name("node-a")  # survives ttyUSB0 -> 3
    assert with_link.port_name("node-a") != with_link.port_name("node-b")
    assert with_link.port_name("node-a").startswith("node-a-")
    port = with_link.port("node-a")
    assert port["spec"]["byIdPath"] == BY_ID and port["spec"]["devicePath"] == BY_ID
    assert port["metadata"]["labels"]["app.kubeserial.com/node"] == "node-a"
