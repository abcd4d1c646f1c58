"""The control plane: instance specs, the supervisor that runs each instance as its own process, reattach.

Entry points: ``spec.InstanceSpec`` (what is saved), ``registry.InstanceRegistry`` (validated
add/edit/remove), ``supervisor.Supervisor`` (start/stop/poll/reattach/stop_all) and
``foreground.run_foreground`` (``koboldtui up``). No Textual here: the panel drives the
same objects from worker threads.
"""
