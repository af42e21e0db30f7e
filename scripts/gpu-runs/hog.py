# A noisy neighbour for the GPU machine: copies 256 MiB within memory for argv[1]
# seconds on one core (run several for more cores and bandwidth).
import sys, time
a = bytearray(b"\x01") * (256 << 20)
b = bytearray(len(a))
end = time.time() + float(sys.argv[1])
while time.time() < end:
    b[:] = a
