# Run at install time (cmake --install, and cpack's staging install) by the
# install rules in CMakeLists.txt: installs the files that live outside the
# prefix's own tree or name paths that depend on it.
#
#   prefix /usr (the Debian package): /etc/herd/topology.json,
#     /etc/logrotate.d/herd, /usr/lib/systemd/system/herd@.service
#   any other prefix P (default /usr/local): P/etc/herd/topology.json,
#     P/etc/logrotate.d/herd, P/lib/systemd/system/herd@.service
#
# The sources carry the package's paths (/usr/bin/herd-server, /usr/bin/herdctl,
# /etc/herd); for another prefix they are rewritten here. The state and log folders are
# systemd's (/var/lib/herd, /var/log/herd) whatever the prefix.
#
# Expects HERD_SOURCE_DIR and HERD_BINARY_DIR to be set by the caller.

if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(_herd_etc "/etc")
else()
  set(_herd_etc "${CMAKE_INSTALL_PREFIX}/etc")
endif()
set(_herd_stage "${HERD_BINARY_DIR}/install-config")
file(MAKE_DIRECTORY "${_herd_stage}")

# Copies SRC to the stage as NAME with the package's paths rewritten for this prefix.
function(_herd_rewrite src name)
  file(READ "${HERD_SOURCE_DIR}/${src}" text)
  string(REPLACE "/usr/bin/herd-server" "${CMAKE_INSTALL_PREFIX}/bin/herd-server" text "${text}")
  string(REPLACE "/usr/bin/herdctl" "${CMAKE_INSTALL_PREFIX}/bin/herdctl" text "${text}")
  string(REPLACE "/etc/herd/" "${_herd_etc}/herd/" text "${text}")
  file(WRITE "${_herd_stage}/${name}" "${text}")
endfunction()

_herd_rewrite(deploy/etc/topology.json topology.json)
_herd_rewrite(deploy/systemd/herd@.service herd@.service)
_herd_rewrite(deploy/debian/herd.logrotate herd)

# An operator's edited topology is never overwritten by a later cmake --install
# (the package's copy is a conffile: dpkg asks instead).
set(_herd_topology "$ENV{DESTDIR}${_herd_etc}/herd/topology.json")
if(EXISTS "${_herd_topology}")
  message(STATUS "Keeping: ${_herd_topology} (the new default is ${_herd_stage}/topology.json)")
else()
  file(INSTALL "${_herd_stage}/topology.json" DESTINATION "${_herd_etc}/herd"
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
endif()
file(INSTALL "${_herd_stage}/herd" DESTINATION "${_herd_etc}/logrotate.d"
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
file(INSTALL "${_herd_stage}/herd@.service" DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/systemd/system"
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
