"""The one level -> class -> DSCP table (mfsched.traffic_classes), by hand, and its users."""

import pytest

from mfsched.traffic_classes import (
    CONTROL_CLASS,
    DEFAULT_CLASSES,
    NUM_CLASSES,
    ClassTable,
    class_of_level,
)


def test_mfs_levels_with_the_default_table():
    # K = 8: urgent P2D (0) -> 1; early stages 1..4 -> 2..5; P2D bands 5..7 share 6;
    # scavenger (8) -> 7; class 0 stays for control traffic
    assert [class_of_level(lv, 8) for lv in range(9)] == [1, 2, 3, 4, 5, 6, 6, 6, 7]
    assert CONTROL_CLASS == 0 and NUM_CLASSES == 8
    assert [DEFAULT_CLASSES.dscp_of(c) for c in range(8)] == [48, 46, 40, 32, 24, 16, 8, 1]
    assert DEFAULT_CLASSES.tos_of(1) == 46 << 2


def test_few_levels_and_few_classes():
    assert [class_of_level(lv, 3) for lv in range(4)] == [1, 2, 3, 7]
    assert [class_of_level(lv, 4, num_classes=4) for lv in range(5)] == [1, 2, 2, 2, 3]
    assert [class_of_level(lv, 8, num_classes=2) for lv in range(9)] == [1] * 9
    assert [class_of_level(lv, 8, num_classes=2, reserved=0) for lv in (0, 7, 8)] == [0, 0, 1]
    assert class_of_level(12, 8) == 7  # below the scavenger is still the scavenger's class


def test_order_is_kept():
    for num_levels in (1, 3, 8, 12):
        for num_classes in (2, 3, 4, 8, 16):
            for reserved in (0, 1):
                cls = [class_of_level(lv, num_levels, num_classes, reserved)
                       for lv in range(num_levels + 1)]
                assert cls == sorted(cls)
                assert all(reserved <= c < num_classes for c in cls)


def test_bad_input():
    with pytest.raises(ValueError):
        class_of_level(-1, 8)
    with pytest.raises(ValueError):
        class_of_level(0, 8, num_classes=1, reserved=1)
    with pytest.raises(ValueError):
        ClassTable(dscp=(64, 0))
    with pytest.raises(ValueError):
        DEFAULT_CLASSES.dscp_of(8)


def test_every_user_reads_the_same_table():
    from mfsched.dataplane import netns, wire
    from mfsched.dataplane.runstate import hw_class_of
    from mfsched.integrations.vllm.transport import transport_class
    from mfsched.policy import Priority

    for level in range(9):
        cls = hw_class_of(Priority(level), 8)
        assert transport_class(level, 8).index == cls
        assert transport_class(level, 8).dscp == DEFAULT_CLASSES.dscp_of(cls)
        tos = dict(((lv, opt), v) for lv, opt, v in wire.class_socket_options(cls))
        import socket

        assert tos[(socket.IPPROTO_IP, socket.IP_TOS)] == DEFAULT_CLASSES.tos_of(cls)
    lines = netns._htb_lines("n0", 1, 1e8, 9000, 100)
    for c in range(NUM_CLASSES):
        assert any(f"match ip tos {DEFAULT_CLASSES.tos_of(c):#04x} 0xfc flowid 1:{0x10 + c:x}"
                   in line for line in lines)
