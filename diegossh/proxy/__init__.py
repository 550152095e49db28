# -*- test-case-name: tests.test_proxy_keylogin,tests.test_proxy_relay -*-
