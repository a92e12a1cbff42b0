"""The function runtime: what turns a function's code zip into warm worker processes and runs its calls. builder
(extract and check the code), environments and pythons (the venv a runtime's requirements need), workers and
worker_process (the warm pool and one worker; runner is the child side, standard library only), sandbox and
processes (isolation, and ending what a dead server left), cron (schedule times). Knows no HTTP."""
