"""What the tests share and that is not a test (imported as tests.support.NAME).

kzfixtures: configs, a regulator that signs tasks, pushes; daemon_proc: ``kzgate
run`` as a child process; dnsfake: an in-process upstream resolver; dnsmsg: DNS
queries, TCP framing, one UDP exchange; streams: loopback clients for the
listener-limit tests; netns: network namespaces and veth pairs (root); rpzpeers:
Unbound, BIND and kdig as RPZ secondaries; namemodel: what a NameTable must
answer; protocol_fixtures, register_fixtures: tasks as dicts and as models;
enforcer_fakes: enforcers that record; skipgate: the strict-skip gate (conftest);
openapi_hooks: Schemathesis hooks (loaded in its own process). bench/ imports
some of them too.
"""
