"""The network core: the deployable network's data types (:mod:`.network`) and their
file format (:mod:`.network_io`). Everything above imports them from here."""
