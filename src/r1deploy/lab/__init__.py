"""The r1deploy test lab: Debian 12 systemd containers, SSH, offline mirrors, a generated inventory.

``Lab(name="lab", workers=1).up()`` returns a :class:`LabInfo`; ``.status()`` and ``.down()`` follow.
``ensure_image()`` gives the host image's tag to other users (Molecule scenarios).
"""

from r1deploy.lab.image import ensure_image
from r1deploy.lab.lab import Lab
from r1deploy.lab.model import Host, LabInfo, Network
from r1deploy.lab.paths import LabError, LabInputError

__all__ = ["Host", "Lab", "LabError", "LabInfo", "LabInputError", "Network", "ensure_image"]
