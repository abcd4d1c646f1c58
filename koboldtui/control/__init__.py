"""The control plane: instance specs, the supervisor that runs each instance as its own process, reattach.

Entry points: ``spec.InstanceSpec`` (what is saved), ``registry.InstanceRegistry`` (validated
add/edit/remove), ``supervisor.Supervisor`` (start/stop/poll/reattach/dismiss/stop_all) and
``foreground.run_foreground`` (``koboldtui up``). The supervisor composes ``run_book.RunBook``
(the one record of each run, shared by every controller through SQLite), ``kinds`` (serve,
command, remote), ``restarts.RestartPolicy``, ``health_watch.HealthWatch`` and
``remote.BackgroundLooks``. No Textual here: the panel drives the same objects from worker threads.
"""
