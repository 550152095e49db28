# -*- test-case-name: tests.test_sshd_session,tests.test_sshd_lifecycle -*-
