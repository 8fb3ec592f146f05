import socket,time,sys
def raw(data, wait=3, port=18003, then=None):
    s=socket.create_connection(('127.0.0.1',port)); s.settimeout(wait)
    s.sendall(data); out=b''
    t=time.time()
    if then:
        time.sleep(then[0]); 
        try: s.sendall(then[1])
        except Exception as e: out+=f'<send {e}>'.encode()
    try:
        while True:
            d=s.recv(65536)
            if not d: out+=f' <EOF after {time.time()-t:.1f}s>'.encode(); break
            out+=d
    except Exception as e: out+=f' <{type(e).__name__} after {time.time()-t:.1f}s>'.encode()
    s.close(); return out
def short(b):
    lines=b.split(b'\r\n'); return [l for l in lines if l.startswith(b'HTTP/') or l.startswith(b'Connection') or b'<' in l[:3] or l.startswith(b' <')] 
