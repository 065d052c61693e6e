"""Only the optional C part of the build; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        # The UDP hot path (kzgate/dns/_fast.c). Optional: without a compiler the
        # install still succeeds and kzgate answers with the pure-Python engine.
        Extension(
            "kzgate.dns._fast",
            sources=["kzgate/dns/_fast.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
        )
    ]
)
