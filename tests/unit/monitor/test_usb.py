"""Matching ttys to SerialDevices: ids, serials, stable paths, one tty per device."""

from hypothesis import given
from hypothesis import strategies as st

from kubeserial_common.core.models import SerialDeviceSpec
from kubeserial_monitor.usb import UsbTty, assign, matches, normalize_usb_id, stable_device_path, usb_tty

BY_ID = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
BY_PATH = "/dev/serial/by-path/pci-0000:00:14.0-usb-0:1:1.0-port0"


def spec(vendor: str = "0403", product: str = "6001", serial: str | None = None) -> SerialDeviceSpec:
    return SerialDeviceSpec(id_vendor=vendor, id_product=product, serial_number=serial)


def tty(serial: str | None = "A", *, port: int = 1, vendor: str = "0403", product: str = "6001") -> UsbTty:
    return UsbTty(
        sys_path=f"/sys/devices/usb1/1-{port}/1-{port}:1.0/ttyUSB{port}/tty/ttyUSB{port}",
        devnode=f"/dev/ttyUSB{port}",
        vendor=vendor,
        product=product,
        serial=serial,
    )


def test_ids_compare_as_hex_ignoring_case() -> None:
    assert matches(spec("10C4", "EA60"), tty(vendor="10c4", product="ea60"))
    assert not matches(spec("10c4", "ea61"), tty(vendor="10c4", product="ea60"))


def test_serial_is_required_only_when_the_spec_names_one() -> None:
    assert matches(spec(), tty("X1"))
    assert matches(spec(serial="X1"), tty("X1"))
    assert not matches(spec(serial="X1"), tty("X2"))
    assert not matches(spec(serial="X1"), tty(None))


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


def test_two_identical_adapters_with_different_serials_map_to_their_own_devices() -> None:
    got = assign(
        {"left": spec(serial="S1"), "right": spec(serial="S2")}, [tty("S2", port=2), tty("S1", port=1)]
    )
    assert got["left"].serial == "S1" and got["right"].serial == "S2"


def test_specific_device_wins_over_a_wildcard_whatever_the_names() -> None:
    got = assign({"aaa-any": spec(), "zzz-exact": spec(serial="S1")}, [tty("S1")])
    assert got == {"zzz-exact": tty("S1")}


def test_wildcards_share_identical_adapters_one_each() -> None:
    got = assign({"one": spec(), "two": spec()}, [tty(None, port=2), tty(None, port=1)])
    assert got["one"].sys_path != got["two"].sys_path


def test_no_match_no_assignment() -> None:
    assert assign({"gps": spec("1546", "01a7")}, [tty("S1")]) == {}


serials = st.sampled_from(["S1", "S2", "S3"])


@given(
    devices=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.none() | serials),
    adapters=st.lists(st.tuples(st.integers(1, 6), st.none() | serials), unique_by=lambda a: a[0]),
)
def test_assignment_is_a_valid_matching(
    devices: dict[str, str | None], adapters: list[tuple[int, str | None]]
) -> None:
    specs = {name: spec(serial=serial) for name, serial in devices.items()}
    ttys = [tty(serial, port=port) for port, serial in adapters]
    got = assign(specs, ttys)
    assert len({t.sys_path for t in got.values()}) == len(got)  # no tty twice
    assert all(matches(specs[name], t) for name, t in got.items())
    assert got == assign(specs, list(reversed(ttys)))  # order of discovery does not matter
    for name, serial in devices.items():
        # A device naming a serial that some adapter has always gets one when no other device
        # names the same serial (a wildcard device can never take it away).
        rivals = [n for n, s in devices.items() if s == serial and n != name]
        if serial is not None and not rivals and any(s == serial for _, s in adapters):
            assert got[name].serial == serial
