"""The iptables manager: nat rules that send the API server's ``nodeIP:10250`` to cloudstream.

``rules`` (sans-I/O: the chain, the diff, the restore input), ``backend`` (nft or legacy, runs
iptables-save/-restore), ``cli`` (``cloudstream iptables sync|cleanup|show``), ``loop`` (the
server's ``--manage-iptables``: rules follow the connected tunnels).
"""
