"""The stand-in for `python -m kfp.dsl.executor_main` in a kfp.local task's command when
tasks start warm (fedpipe.ops.warm_tasks).

It runs as `python -I -S warm_task_client.py SOCKET MODULE ARGS...`, with the standard
library only, so it starts in milliseconds: it hands the warm server its module, arguments,
environment, working directory and standard streams, waits, and ends as the task did (the
same exit code, or killed by the same signal). Closing the connection (this process killed)
kills the task."""

import json
import os
import signal
import socket
import struct
import sys

# fedpipe.ops.warm_tasks' _HEADER and _STATUS, repeated: this script imports only the stdlib.
HEADER, STATUS = struct.Struct("!Q"), struct.Struct("!i")


def main() -> None:
    socket_path, module, *args = sys.argv[1:]
    request = json.dumps(
        {"module": module, "argv": args, "env": dict(os.environ), "cwd": os.getcwd()}
    ).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        try:
            conn.connect(socket_path)
        except OSError as e:
            sys.exit(f"fedpipe warm task server at {socket_path} is not reachable: {e}")
        socket.send_fds(conn, [HEADER.pack(len(request))], [0, 1, 2])
        conn.sendall(request)
        reply = b""
        while len(reply) < STATUS.size:
            chunk = conn.recv(STATUS.size - len(reply))
            if not chunk:
                sys.exit(f"fedpipe warm task server at {socket_path} closed before the task ended")
            reply += chunk
    (status,) = STATUS.unpack(reply)
    if status < 0:  # the task was killed by a signal: end the same way
        if -status not in (signal.SIGKILL, signal.SIGSTOP):  # these cannot be caught
            signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    sys.exit(status)


if __name__ == "__main__":
    main()
