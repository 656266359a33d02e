# A step as a root model would write it: search, read around the hits, keep
# notes in state, and finish with an answer built from what was read.
doc = context[0]
print(f"{len(context)} document(s); {doc.name} has {len(doc)} characters")
notes = state.setdefault("work", {}).setdefault("notes", [])
for hit in doc.find("Revenue"):
    sentence = doc.slice(hit["start_char"], hit["start_char"] + 72, tag="context:revenue")
    notes.append(sentence)
    print("read:", sentence)
growth = doc.regex(r"grew (\d+)% to \$([\d.]+)M")[0]["groups"]
tool.FINAL(f"Revenue grew {growth[0]}% to ${growth[1]}M.")
