"""Video models: text-to-video on diffusers pipelines (:mod:`.diffusers_engine`)."""
