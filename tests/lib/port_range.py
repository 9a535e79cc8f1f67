#!/usr/bin/env python3
"""Prints a free run of N consecutive ports as "LO-HI" (best effort).

The run lies below the kernel's ephemeral range, so that no port another test
gets by binding port 0 (tests run in parallel under ctest -j) lands in it later.
Usage: port_range.py N"""
import random
import socket
import sys

n = int(sys.argv[1])
with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
    eph_lo = int(f.read().split()[0])
for _ in range(200):
    lo = random.randint(10000, max(10001, eph_lo - 1 - n))
    ok = True
    for p in range(lo, lo + n):
        s = socket.socket()
        try:
            s.bind(("0.0.0.0", p))
        except OSError:
            ok = False
        finally:
            s.close()
        if not ok:
            break
    if ok:
        print(f"{lo}-{lo + n - 1}")
        sys.exit(0)
sys.exit(1)
