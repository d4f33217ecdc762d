# Run at every build (see CMakeLists.txt): writes herd_version.h with the
# project's version and the commit the tree was built from. configure_file
# rewrites the header only when its text changes, so an unchanged commit
# rebuilds nothing.
execute_process(COMMAND git -C "${SRC}" rev-parse --short=12 HEAD
                OUTPUT_VARIABLE HERD_COMMIT OUTPUT_STRIP_TRAILING_WHITESPACE
                RESULT_VARIABLE rc ERROR_QUIET)
if(NOT rc EQUAL 0 OR HERD_COMMIT STREQUAL "")
  set(HERD_COMMIT "unknown")
else()
  execute_process(COMMAND git -C "${SRC}" status --porcelain --untracked-files=no
                  OUTPUT_VARIABLE dirty OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(NOT dirty STREQUAL "")
    set(HERD_COMMIT "${HERD_COMMIT}-dirty")
  endif()
endif()
configure_file("${SRC}/cmake/herd_version.h.in" "${OUT}" @ONLY)
