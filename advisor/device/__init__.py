"""The host's side of measuring on a device: how to reach it and what to ask the agent.

- `link`: `DeviceLink`, the `[device]` table of a target profile (SSH host or command).
- `bundle`: the agent as one `.pyz` file, pushed over the same SSH command on first use.
- `connection`: one agent session per link and process; restarted after a failure.
- `remote`: latency, paired speed-ups, outputs and profiler events measured on the device,
  every number the agent returns validated here.
- `probe`: fingerprint a device and write its target profile.
"""
