function m(t,a,o){let n=structuredClone(t.get("snapshot")||{seq:0}),s=0,c=()=>{let e=t.get("snapshot");e&&e.seq>=n.seq&&(n=structuredClone(e),o(n,!0))},i=(e,p)=>{!e||e.kind!=="delta"||(e.base===n.seq?(a(n,e,p||[]),n.seq=e.seq,o(n,!1)):e.seq>n.seq&&Date.now()-s>1e3&&(s=Date.now(),t.send({kind:"resync"})))};return t.on("change:snapshot",c),t.on("msg:custom",i),o(n,!0),g(t,!0),()=>{t.off("change:snapshot",c),t.off("msg:custom",i),g(t,!1)}}function g(t,a){try{t.send({kind:"view",on:a})}catch{}}function f(t,a){if(document.getElementById(t))return;let o=document.createElement("style");o.id=t,o.textContent=a,document.head.appendChild(o)}var h=`
.nbc-widget { font-family: var(--jp-ui-font-family, sans-serif);
  font-size: var(--jp-ui-font-size1, 13px); color: var(--jp-ui-font-color1, #222);
  padding: 4px 0; }
.nbc-title { font-weight: 600; margin-bottom: 4px; }
.nbc-muted { color: var(--jp-ui-font-color2, #666); }
.nbc-widget table { border-collapse: collapse; }
.nbc-widget th { text-align: left; font-weight: 600; padding: 2px 8px;
  border-bottom: 1px solid var(--jp-border-color2, #ddd); }
.nbc-widget td { padding: 2px 8px; }
.nbc-bar { display: flex; height: 10px; border-radius: 3px; overflow: hidden;
  background: var(--jp-layout-color2, #eee); }
.nbc-button { font: inherit; color: var(--jp-ui-font-color1, #222);
  background: var(--jp-layout-color2, #eee); border: 1px solid var(--jp-border-color1, #bbb);
  border-radius: 3px; padding: 1px 10px; cursor: pointer; }
.nbc-button:disabled { opacity: 0.5; cursor: default; }
.nbc-error { color: var(--jp-error-color1, #d32f2f); white-space: pre-wrap; }
`;function r(t,a={},...o){let n=document.createElement(t);for(let[s,c]of Object.entries(a))c!=null&&(s==="class"?n.className=String(c):s==="style"?n.setAttribute("style",String(c)):s.startsWith("on")?n[s]=c:n.setAttribute(s,String(c)));for(let s of o)n.append(s);return n}function d(t){if(t==null)return"?";let a=["B","KB","MB","GB","TB"],o=0;for(;Math.abs(t)>=1e3&&o<a.length-1;)t/=1e3,o++;return o===0?`${t.toFixed(0)} B`:`${t.toFixed(1)} ${a[o]}`}var x=`
.nbc-cluster td { vertical-align: middle; }
.nbc-cluster .nbc-meter { display: flex; align-items: center; gap: 6px; }
.nbc-cluster .nbc-fill { height: 10px; background: var(--jp-brand-color1, #1976d2); }
.nbc-cluster .nbc-spark { stroke: var(--jp-brand-color1, #1976d2); fill: none; stroke-width: 1.2; }
.nbc-cluster .nbc-dead { color: var(--jp-error-color1, #d32f2f); }
.nbc-cluster .nbc-info { margin-bottom: 6px; }
.nbc-cluster code { font-family: var(--jp-code-font-family, monospace); font-size: 11px; }
`;function l(t,a,o=""){let n=Math.max(0,Math.min(1,t||0)),s=r("div",{class:"nbc-bar",style:"width:120px"},r("div",{class:"nbc-fill",style:`width:${(n*100).toFixed(1)}%`}));return r("div",{class:`nbc-meter ${o}`,"data-fraction":n.toFixed(3)},s,r("span",{},a))}function w(t,a=1){let o="http://www.w3.org/2000/svg",n=document.createElementNS(o,"svg");n.setAttribute("width","120"),n.setAttribute("height","20");let s=document.createElementNS(o,"polyline"),c=Math.max(1,t.length-1);return s.setAttribute("points",t.map((i,e)=>`${(e/c*118+1).toFixed(1)},${(19-Math.min(i,a)/a*18).toFixed(1)}`).join(" ")),s.setAttribute("class","nbc-spark"),n.append(s),n}function S(t,a){let o=a.nodes||[],s=r("table",{},r("thead",{},r("tr",{},...["node","CPU","CPU (last minutes)","GPU","memory","object store","workers","pending"].map(e=>r("th",{},e))))),c=r("tbody");for(let e of o){let p=e.history||[],b=e.cpus-e.cpus_free,v=Object.entries(e.demand||{}).map(([u,y])=>`${u} ×${y}`).join(", ");c.append(r("tr",{class:"nbc-node-row","data-node":e.node_id,"data-alive":String(e.alive)},r("td",{class:e.alive?"":"nbc-dead"},e.address+(e.alive?"":" (dead)")),r("td",{},l(e.cpus?b/e.cpus:0,`${b}/${e.cpus} · ${e.cpu.toFixed(0)}%`,"nbc-cpu")),r("td",{},w(p.map(u=>u[0]),100)),r("td",{},e.gpus?l((e.gpus-e.gpus_free)/e.gpus,`${e.gpus-e.gpus_free}/${e.gpus}`):"–"),r("td",{},l(e.mem_total?e.mem_used/e.mem_total:0,`${d(e.mem_used)} / ${d(e.mem_total)}`,"nbc-mem")),r("td",{},l(e.store_capacity?e.store_used/e.store_capacity:0,`${d(e.store_used)} / ${d(e.store_capacity)}`,"nbc-store")),r("td",{class:"nbc-workers"},String(e.workers)),r("td",{},v||"–")))}s.append(c);let i=o.filter(e=>e.alive).length;t.replaceChildren(...$(a.info),r("div",{class:"nbc-title"},`Cluster: ${i} node${i===1?"":"s"} alive`),s),t.dataset.nodes=String(i)}function $(t){if(!t)return[];let a=r("table",{class:"nbc-info"});for(let[o,n]of t.rows||[]){let s=o==="Dashboard"&&t.dashboard?r("a",{href:t.dashboard,target:"_blank",class:"nbcluster-dashboard"},"open the dashboard"):r("code",{},n);a.append(r("tr",{},r("td",{class:"nbc-muted"},o),r("td",{},s)))}return[r("div",{class:"nbc-title nbc-info-title"},t.title||""),a]}function j({model:t,el:a}){f("nbc-base-css",h),f("nbc-cluster-css",x);let o=r("div",{class:"nbc-widget nbc-cluster"});return a.append(o),m(t,()=>{},n=>S(o,n))}var B={render:j};export{B as default,l as meter};
