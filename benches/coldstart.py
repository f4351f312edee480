#!/usr/bin/env python3
"""Cold start of `edgechat serve` on an existing data directory, after a clean stop and after
kill -9: the time until it prints `edgechat listening on`, and its peak RSS (VmHWM).

Usage: python3 benches/coldstart.py target/release/edgechat DATA_DIR

Each round starts the server, has it commit a few sends (`edgechat bench durable --server`),
stops it with SIGTERM (clean) or SIGKILL (kill -9), then times the next start. Figures and the
database used are in docs/PERFORMANCE.md ("Cold start with a million messages").
"""
import subprocess, time, signal, sys, os
B = sys.argv[1]; D = sys.argv[2]
def start():
    t = time.monotonic()
    p = subprocess.Popen([B, "serve", "--data-dir", D, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    dt = (time.monotonic() - t) * 1000
    hwm = [l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmHWM")][0].split()[1]
    return p, dt, int(hwm) // 1024, line.strip()
for mode in ["clean", "clean", "kill9", "kill9"]:
    p, dt, hwm, line = start()
    port = line.rsplit(":", 1)[1]
    # Some commits by this binary before it stops or dies.
    subprocess.run([B, "bench", "durable", "--server", f"https://localhost:{port}", "--ca", f"{D}/certs/ca.pem", "--senders", "2", "--messages", "50"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    if mode == "clean":
        p.send_signal(signal.SIGTERM); p.wait()
    else:
        p.kill(); p.wait()
    p, dt, hwm, line = start()
    print(f"after {mode:5}: started in {dt:7.1f} ms, peak RSS {hwm} MiB ({line})", flush=True)
    p.send_signal(signal.SIGTERM); p.wait()
