# Names vulture (scripts/test: `vulture`, settings in pyproject.toml) reports as unused in
# kzgate/ that are used after all. Not a module: vulture reads each line as a use of the name.
# A new line needs the reason beside it; dead code is removed, not listed here.
# ruff: noqa
from vulture.whitelist_utils import Whitelist

_ = Whitelist()

# Called by a framework through a protocol, never by name in kzgate/.
_.collect  # prometheus_client calls a registered Collector's collect() at each scrape
_.datagram_received  # asyncio.DatagramProtocol callbacks
_.error_received
tb  # the third parameter of __exit__ (register/store.py), required by the protocol

# feed/ports.py: FeedSink.on_pushed's parameter, a typing.Protocol declaration (the sink calls it).
callback

# Declarations of the C module's interface (typing.Protocol: read by mypy, implemented in C).
_.entry_type  # dns/fastpath.py: FastView's field, read by fast_view.c
entry_type  # dns/fastpath.py: FastViewType's keyword parameter
view  # dns/fastpath.py: FastModule.serve/answer parameters
SOURCE_SHA256  # native.py: the C module's build stamp; tests/unit/test_native_build.py
SOURCE_FILES  # checks the module was built from the sources on disk (KZGATE_REQUIRE_FAST)
_.nbytes  # nametable.py: the memory a NameTable holds (malloc'd by C, unseen by Python's
#           own accounting): kept beside its C getter for measuring the table

# Read by the tests and tools, on purpose, with no cost to the product.
_.lookup_name  # policy.py: the text-name form of lookup_wire, the tests' way to ask the index
verify_receipt  # protocol/receipts.py: the checking twin of sign_receipt (the receipt's reader)
verify_report  # probes/report.py: the checking twin of sign_report (the report's reader)
_.drift_repairs  # enforce/nft/enforcer.py: bench/nft.py reports drift reports caused by its own batches

# enforce/nft/wire.py: message types tests use as events that must not count as drift.
NFT_MSG_NEWCHAIN
NFT_MSG_NEWSET

# Issue 12, the feed.
_.publish  # feed/server.py: FeedServer.publish, the in-process way to grow a feed (tests, bench)
chain_of  # feed/chain.py: the §6 chain by its definition; the tests hold the puller's and the
#          server's incremental chains to it
