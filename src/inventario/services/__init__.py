"""What the routes orchestrate, apart from HTTP details: a write applied now or queued
(:mod:`.writes`), a price suggested by the model or the rule (:mod:`.pricing`)."""
