"""Ray itself: a local instance on loopback, or a joined cluster, and the check of a cluster's address.

Ray is imported inside functions only: start_ray sets the environment that Ray reads when it is imported."""
import os

from kdsearch.core.errors import UserError, first_line


def start_ray(address, log, files=()):
    """Join `address`, or start a local Ray on 127.0.0.1 with the dashboard; return the dashboard URL. files:
    the users' network files, shipped to every worker by Ray's runtime environment (each a py_module there,
    importable by its stem): a worker node needs only kdsearch installed, no shared file system."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no progress tables; we print our own lines
    # a forced experiment snapshot per checkpoint is expected here (num_to_keep=1); do not warn about it
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if address is None:
        # Ray's single-node path keeps the node and every listener on 127.0.0.1 (else it binds all interfaces).
        # A local instance listens on loopback only, so we run it without Ray 2.60's token authentication:
        # the dashboard then opens in a browser as is.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if address is not None:
        # if the cluster stops answering between check_address and here: one try of seconds, not 14 minutes
        os.environ.setdefault("RAY_gcs_rpc_server_connect_timeout_s", "2")  # read when ray is imported
        os.environ.setdefault("RAY_py_gcs_connect_timeout_s", "5")
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "1")  # the tries (read by ray.init)
    import ray
    env = {"py_modules": list(files)} if files else None
    if address is None:
        # "local": a new instance even when RAY_ADDRESS is set or a `ray start` cluster runs on this machine
        ctx = ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False,
                       configure_logging=False, runtime_env=env)
    else:
        try:
            ctx = ray.init(address=address, log_to_driver=False, runtime_env=env)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UserError(f"cannot join the Ray cluster at --address {address} ({first_line(e, 150)}); fix: "
                            f"check the address (ray status on the head node), and set RAY_AUTH_MODE=token if the "
                            f"cluster uses token authentication") from None
    url = f"http://{ctx.dashboard_url}" if ctx.dashboard_url else "(dashboard not available)"
    node = ray.nodes()[0]["NodeManagerAddress"] if address is None else None
    log(f"ray: {f'started a local instance on {node}' if node else 'joined ' + address}; dashboard {url}")
    return url


def check_address(address, timeout=3.0):
    """A Ray cluster must answer at `address` (host:port), checked before anything is written: ray.init would
    retry for 14 minutes. Ray's GCS speaks gRPC, so it answers HTTP/2's connection preface with a SETTINGS
    frame; a closed port refuses, and another server answers something else (or nothing)."""
    import socket
    host, _, port = address.rpartition(":")
    fix = "fix: give the head node's address as HOST:PORT (ray status on the head node prints it)"
    if not host or not port.isdigit():
        raise UserError(f"--address {address}: not HOST:PORT; {fix}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as conn:
            conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
            frame = conn.recv(9)
    except OSError as e:
        raise UserError(f"--address {address}: no Ray cluster answers there ({type(e).__name__}: {e}); "
                        f"{fix}") from None
    if len(frame) < 9 or frame[3] != 4:
        raise UserError(f"--address {address}: something listens there, but not a Ray cluster; {fix}")


def stop_ray():
    import ray
    ray.shutdown()
