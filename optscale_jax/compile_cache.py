"""A persistent JAX compilation cache, so a second run does not wait on XLA compilation.

The commands of the `optscale` CLI turn it on unless told not to (`--no-compile-cache`, or
`OPTSCALE_COMPILE_CACHE=0` in the environment); Python users call `enable_compile_cache()`.
Entries are keyed by jax's own cache key (the program, the jax/jaxlib versions, the backend
and its flags), so a stale entry is never used: an upgrade simply compiles again.
"""

from __future__ import annotations

import os
import pathlib

__all__ = ["default_cache_dir", "enable_compile_cache"]


def default_cache_dir() -> pathlib.Path:
    """`$OPTSCALE_COMPILE_CACHE_DIR` if set, else `$XDG_CACHE_HOME/optscale-jax`, else
    `~/.cache/optscale-jax`."""
    if os.environ.get("OPTSCALE_COMPILE_CACHE_DIR"):
        return pathlib.Path(os.environ["OPTSCALE_COMPILE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "optscale-jax"


def enable_compile_cache(path: str | os.PathLike | None = None) -> pathlib.Path | None:
    """Points jax's persistent compilation cache at `path` (default: `default_cache_dir()`).

    Every compiled program is cached, however short its compilation: the replay engine
    compiles many small programs whose total, not any single one, is what a user waits for.
    A cache folder that cannot be created leaves the cache off, silently: it only saves time.

    Args:
        path: the cache folder.

    Returns:
        The folder in use, or None if it could not be created.
    """
    import jax

    folder = pathlib.Path(path) if path is not None else default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
