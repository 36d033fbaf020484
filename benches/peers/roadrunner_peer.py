"""libroadrunner (CVODE) on the peer problem, one subject at a time (one core).

usage: roadrunner_peer.py VPOP_DIR [N]

The model is SBML built here; doses are added to the depot between simulate() calls of one
dosing interval each; AUC is a rate-rule state; Cmax the maximum over a 0.01 h output grid.
"""
import sys
import time

import numpy as np
import roadrunner

from common import ATOL, COUNT, DOSE, END, EVERY, RTOL, load, report

SBML = """<?xml version="1.0" encoding="UTF-8"?>
<sbml xmlns="http://www.sbml.org/sbml/level3/version1/core" level="3" version="1">
 <model id="two_cmt_oral">
  <listOfCompartments><compartment id="c" size="1" constant="true"/></listOfCompartments>
  <listOfParameters>
   <parameter id="ka" value="1" constant="true"/><parameter id="cl" value="1" constant="true"/>
   <parameter id="v1" value="1" constant="true"/><parameter id="q" value="1" constant="true"/>
   <parameter id="v2" value="1" constant="true"/>
   <parameter id="depot" value="0" constant="false"/><parameter id="central" value="0" constant="false"/>
   <parameter id="periph" value="0" constant="false"/><parameter id="auc" value="0" constant="false"/>
  </listOfParameters>
  <listOfRules>
   <rateRule variable="depot"><math xmlns="http://www.w3.org/1998/Math/MathML">
    <apply><times/><cn>-1</cn><ci>ka</ci><ci>depot</ci></apply></math></rateRule>
   <rateRule variable="central"><math xmlns="http://www.w3.org/1998/Math/MathML">
    <apply><plus/><apply><times/><ci>ka</ci><ci>depot</ci></apply>
     <apply><times/><cn>-1</cn><apply><divide/><apply><plus/><ci>cl</ci><ci>q</ci></apply><ci>v1</ci></apply><ci>central</ci></apply>
     <apply><times/><apply><divide/><ci>q</ci><ci>v2</ci></apply><ci>periph</ci></apply></apply></math></rateRule>
   <rateRule variable="periph"><math xmlns="http://www.w3.org/1998/Math/MathML">
    <apply><minus/><apply><times/><apply><divide/><ci>q</ci><ci>v1</ci></apply><ci>central</ci></apply>
     <apply><times/><apply><divide/><ci>q</ci><ci>v2</ci></apply><ci>periph</ci></apply></apply></math></rateRule>
   <rateRule variable="auc"><math xmlns="http://www.w3.org/1998/Math/MathML">
    <apply><divide/><ci>central</ci><ci>v1</ci></apply></math></rateRule>
  </listOfRules>
 </model>
</sbml>"""

vpop_dir = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
ref = load(vpop_dir, n)
rr = roadrunner.RoadRunner(SBML)
rr.integrator.relative_tolerance = RTOL
rr.integrator.absolute_tolerance = ATOL
rr.timeCourseSelections = ["time", "central"]
auc, cmax = np.zeros(n), np.zeros(n)
t0 = time.perf_counter()
for i in range(n):
    rr.resetAll()
    for k in ["ka", "cl", "v1", "q", "v2"]:
        rr[k] = float(ref[k][i])
    best = 0.0
    for d in range(COUNT):
        a = d * EVERY
        b = END if d == COUNT - 1 else a + EVERY
        rr["depot"] = rr["depot"] + DOSE
        res = rr.simulate(a, b, int(round((b - a) / 0.01)) + 1)
        best = max(best, float(np.max(res[:, 1])) / ref["v1"][i])
    auc[i], cmax[i] = rr["auc"], best
elapsed = time.perf_counter() - t0
report("libroadrunner CVODE", elapsed / n, auc, cmax, ref)
