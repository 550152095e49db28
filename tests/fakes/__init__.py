"""
Stand-ins for the services the proxy talks to (BBS, and later UAA and Cloud
Controller): real servers on 127.0.0.1 speaking the real wire formats.
"""
