# sluice_proto_library(<target> <comment> <proto>...): a static library of the C++ messages
# protoc (Debian's) generates from the project's own .proto copies under ./proto of the
# calling folder; the generated headers are a system include of the target.
function(sluice_proto_library target comment)
  set(protos ${ARGN})
  set(out ${CMAKE_CURRENT_BINARY_DIR}/gen)
  set(srcs)
  set(hdrs)
  foreach(p ${protos})
    string(REGEX REPLACE "\\.proto$" "" stem ${p})
    list(APPEND srcs ${out}/${stem}.pb.cc)
    list(APPEND hdrs ${out}/${stem}.pb.h)
  endforeach()
  list(TRANSFORM protos PREPEND ${CMAKE_CURRENT_SOURCE_DIR}/proto/ OUTPUT_VARIABLE files)
  add_custom_command(
    OUTPUT ${srcs} ${hdrs}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${out}
    COMMAND protobuf::protoc -I ${CMAKE_CURRENT_SOURCE_DIR}/proto --cpp_out=${out} ${protos}
    WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/proto
    DEPENDS ${files} protobuf::protoc
    COMMENT "protoc: ${comment}")
  add_library(${target} STATIC ${srcs})
  target_include_directories(${target} SYSTEM PUBLIC ${out})
  target_link_libraries(${target} PUBLIC protobuf::libprotobuf)
endfunction()
