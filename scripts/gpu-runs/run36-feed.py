import json, os, subprocess
ref = json.load(open('.gpu/greedy.json'))['SmolLM2-135M-Instruct.Q4_1.gguf']
out = os.environ['OUT']
for i, case in enumerate(ref['cases']):
    p = subprocess.run(['/tmp/decode_check36', '--model', '/tmp/smol.gguf', '--device', 'cuda', '--mode', 'resident', '-n', '16',
                        '--prompt-text', case['prompt'], '--feed-text', case['greedy_continuation']], capture_output=True, text=True)
    open(f'{out}/feed_{i}.txt', 'w').write(p.stdout + p.stderr)
    lines = [l for l in p.stdout.splitlines() if l.startswith('fed') or l.startswith('steps')]
    print('smol case %d: %s (rc %d)' % (i, ' ; '.join(lines), p.returncode))
