"""srd's process pools: workers die on SIGTERM even when the parent's SIGTERM raises (srd's tools)."""

import multiprocessing as mp
import signal


def _handlers(_):
    return signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, signal.getsignal(
        signal.SIGINT
    ) is signal.SIG_IGN


def test_pool_workers_take_the_default_sigterm_even_under_srds_handler():
    from srd.cli._common import install_sigterm_handler
    from srd.utils import pool_worker_init

    before = signal.getsignal(signal.SIGTERM)
    try:
        install_sigterm_handler()  # what every srd tool does; a forked worker inherits it
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        with mp.get_context("fork").Pool(2, initializer=pool_worker_init) as pool:
            assert pool.map(_handlers, range(2)) == [(True, True), (True, True)]
    finally:
        signal.signal(signal.SIGTERM, before)
