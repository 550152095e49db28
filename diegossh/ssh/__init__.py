# -*- test-case-name: tests.test_transport_unit,tests.test_channel -*-
