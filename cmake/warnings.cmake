add_library(sluice_warnings INTERFACE)
target_compile_options(sluice_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wimplicit-fallthrough
  # g++ 12 misreports coroutine frames (asio awaitable_frame operator delete).
  -Wno-mismatched-new-delete
  $<$<BOOL:${SLUICE_WERROR}>:-Werror>)
