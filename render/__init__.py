"""The bundled renderer: diffusers pipelines metered stage by stage, emitting cost events."""
