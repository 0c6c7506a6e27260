"""Example tasks that live outside the rftune package and plug in by name (``task.name: package.module:factory``)."""
