"""rayborg drivers: discover accelerators under a sysfs root and act on them (program, mdevs).

Public API: `discover_host`, `HostDrivers`, the report models and errors from `base`.
"""

from rayborg.drivers.base import (BitstreamError, ControlPathId, DriverAttachHandle, DriverContext,
                                  DriverDeployable, DriverDevice, DriverError, HostReport, ProgrammingError,
                                  UnknownDriver)
from rayborg.drivers.registry import DRIVERS, REAL_DRIVERS, HostDrivers, discover_host, driver_class

__all__ = ["BitstreamError", "ControlPathId", "DRIVERS", "DriverAttachHandle", "DriverContext", "DriverDeployable",
           "DriverDevice", "DriverError", "HostDrivers", "HostReport", "ProgrammingError", "REAL_DRIVERS",
           "UnknownDriver", "discover_host", "driver_class"]
